"""Starting, stopping and restarting the local stack's child processes.

Each child runs in its own session (process group) so that stopping it also
stops whatever it forked; every process is stopped by its own pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: Linux sends it SIGTERM when the process
    that started it dies, even by SIGKILL, so a killed ``conveyor dev up`` or
    test session leaves no server running."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll ``check`` until it holds; raise naming ``what`` (and the log's tail) if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    status = (
        f" (exited with {process.returncode})" if process and process.poll() is not None else ""
    )
    raise RuntimeError(f"{what} did not become ready{status}\n{tail}")


@dataclass
class ManagedProcess:
    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(self.env) if self.env is not None else None,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def how_it_exited(self) -> str:
        """``signal 9`` or ``exit code 1``; call once it has exited."""
        assert self.process is not None
        assert self.process.returncode is not None
        code = self.process.returncode
        return f"signal {-code}" if code < 0 else f"exit code {code}"

    def note(self, event: str, **fields: object) -> None:
        """One JSON line in the process's own log, in the services' format."""
        timestamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        line = {"event": event, **fields, "level": "warning", "timestamp": timestamp}
        with open(self.log_path, "a") as log:
            log.write(json.dumps(line) + "\n")

    def wait_for_port(self, port: int, timeout: float = 30.0) -> None:
        wait_until(lambda: port_open(port), timeout, self.name, self.process, self.log_path)

    def kill(self) -> None:
        """SIGKILL, no grace: what a crash looks like."""
        if self.running():
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def terminate(self) -> None:
        """SIGTERM the process group, without waiting."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after ``grace``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.terminate()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@dataclass(frozen=True)
class Backoff:
    """How long to wait before restarting a crashed process, as compose's
    ``restart: unless-stopped`` does: ``first``, doubling each crash in a row,
    at most ``cap``; a process that stayed up ``reset_after`` seconds counts
    as healthy, so its next crash waits ``first`` again."""

    first: float = 1.0
    cap: float = 30.0
    reset_after: float = 30.0

    def delay(self, crashes_in_a_row: int) -> float:
        return float(min(self.first * 2 ** (crashes_in_a_row - 1), self.cap))


@dataclass
class Supervisor:
    """Keeps one process running: when it exits, says so and starts it again
    after the back-off. ``check`` is polled (never blocks), from the main
    thread: PR_SET_PDEATHSIG fires when the *thread* that started a child
    ends, so a restart from a helper thread would not die with us."""

    process: ManagedProcess
    label: str
    backoff: Backoff = Backoff()
    restarts: int = 0
    crashes_in_a_row: int = 0
    started_at: float = field(default_factory=time.monotonic)
    restart_at: float | None = None

    def check(self, say: Callable[[str], None], now: float | None = None) -> bool:
        """Notice an exit or restart when due; True if it restarted just now."""
        now = time.monotonic() if now is None else now
        if self.restart_at is None:
            if not self.process.running():
                self._schedule(say, now)
            return False
        if now < self.restart_at:
            return False
        self.process.start()
        self.started_at, self.restart_at = now, None
        say(f"  {datetime.now():%H:%M:%S}  {self.label} restarted, pid {self.process.pid}")
        return True

    def _schedule(self, say: Callable[[str], None], now: float) -> None:
        stayed_up = now - self.started_at >= self.backoff.reset_after
        self.crashes_in_a_row = 1 if stayed_up else self.crashes_in_a_row + 1
        self.restarts += 1
        delay = self.backoff.delay(self.crashes_in_a_row)
        self.restart_at = now + delay
        exited = self.process.how_it_exited()
        self.process.note("service.restarting", exit=exited, restart=self.restarts, delay_s=delay)
        say(
            f"  {datetime.now():%H:%M:%S}  {self.label} exited ({exited}); "
            f"restarting in {delay:g} s (restart {self.restarts})"
        )
