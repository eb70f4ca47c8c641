"""What a measured process costs: peak RSS, CPU time, bytes through its sockets and files.

* ``ProcessWatch`` follows a long-running process (a transfer service) from a
  thread: its RSS and its children's, sampled every 20 ms, plus the kernel's
  own high-water mark (``VmHWM``), CPU time and ``/proc/PID/io`` counters.
  ``read_chars``/``write_chars`` count every byte the process passed through
  ``read``/``recv``/``write``/``send``: for a worker, its network traffic.
* ``CpuMeter`` says how much CPU each stand-in spent during a leg, and
  ``RequestCount`` how many requests moto served.
* ``run_command`` runs a one-shot command (``rclone``, ``sftp``): CPU time from
  ``wait4``, peak RSS from the same sampling.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

MB = 1_000_000


@dataclass(frozen=True)
class Usage:
    seconds: float
    peak_rss: int
    cpu_seconds: float
    read_bytes: int = 0
    written_bytes: int = 0

    @property
    def peak_rss_mb(self) -> float:
        return round(self.peak_rss / MB, 1)


def _high_water_mark(pid: int) -> int:
    """The kernel's peak RSS of ``pid`` since it started (``VmHWM``), in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class ProcessWatch:
    """Peak RSS (the process and its children), CPU time and I/O of ``pid`` while
    the ``with`` block runs. Read the result from ``usage`` after the block.

    Every sample also reads the kernel's ``VmHWM``, so a peak between samples
    is not missed; if the process has exited by the end of the block, the last
    sample's counters stand.
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.usage: Usage | None = None
        self._cpu = 0.0
        #: psutil's ``pio`` counters, once read.
        self._io: Any = None

    def _tree_rss(self) -> int:
        total = 0
        for process in [self._process, *self._process.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        return total

    def _read(self) -> None:
        """One sample; raises ``psutil.Error`` once the process is gone."""
        self._peak = max(self._peak, self._tree_rss(), _high_water_mark(self._process.pid))
        times = self._process.cpu_times()
        self._cpu = times.user + times.system + times.children_user + times.children_system
        self._io = self._process.io_counters()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self._read()
            except psutil.Error:
                return
            self._stop.wait(self._interval)

    def __enter__(self) -> ProcessWatch:
        self._started = time.monotonic()
        with contextlib.suppress(psutil.Error):  # a command may finish at once
            self._read()
        self._cpu_at_start, self._io_at_start = self._cpu, self._io
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(psutil.Error):
            self._read()
        self.usage = Usage(
            seconds=time.monotonic() - self._started,
            peak_rss=self._peak,
            cpu_seconds=float(self._cpu - self._cpu_at_start),
            read_bytes=self._io_delta("read_chars"),
            written_bytes=self._io_delta("write_chars"),
        )

    def _io_delta(self, counter: str) -> int:
        if self._io is None or self._io_at_start is None:
            return 0
        return int(getattr(self._io, counter) - getattr(self._io_at_start, counter))


@functools.cache
def socket_reads_counted() -> bool:
    """Whether ``/proc/PID/io``'s ``rchar`` counts bytes received from a socket here.
    Some kernels and sandboxes count only file reads, and then a worker's
    ``read_chars`` says nothing about the payload it streamed."""
    sender, receiver = socket.socketpair()
    with sender, receiver:
        before = psutil.Process().io_counters().read_chars
        sender.sendall(b"\0" * 65536)
        received = 0
        while received < 65536:
            received += len(receiver.recv(65536))
        return bool(psutil.Process().io_counters().read_chars - before >= received)


def _cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and of the children it has reaped (sshd's sessions)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system + times.children_user + times.children_system)


class CpuMeter:
    """CPU seconds each named process spent while the ``with`` block ran: where
    the machine's two cores went during a leg."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._pids = dict(pids)
        self._start: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def __enter__(self) -> CpuMeter:
        self._start = {name: _cpu_seconds(pid) for name, pid in self._pids.items()}
        return self

    def restart(self) -> None:
        """Count from now: what came before was setting the leg up."""
        self.__enter__()

    def __exit__(self, *_exc: object) -> None:
        self.seconds = {
            name: round(_cpu_seconds(pid) - self._start[name], 2)
            for name, pid in self._pids.items()
        }


class RequestCount:
    """Requests a werkzeug-based server (moto) logged while the ``with`` block ran."""

    def __init__(self, log: Path) -> None:
        self._log = log
        self.requests = 0

    def _size(self) -> int:
        return self._log.stat().st_size if self._log.exists() else 0

    def __enter__(self) -> RequestCount:
        self._start = self._size()
        return self

    def __exit__(self, *_exc: object) -> None:
        with self._log.open("rb") as log:
            log.seek(self._start)
            self.requests = sum(1 for line in log if b" HTTP/1." in line)


def run_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    log: Path,
) -> Usage:
    """Run ``argv`` to completion; raise with the tail of its output if it fails.

    CPU time comes from ``wait4``; the peak RSS from sampling, because
    ``ru_maxrss`` also counts the moments before ``exec`` when the child was
    still a copy of this (much larger) Python process.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        started = time.monotonic()
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
        )
        with ProcessWatch(process.pid) as watch:
            if stdin is not None:
                assert process.stdin is not None
                process.stdin.write(stdin.encode())
                process.stdin.close()
            _, status, rusage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{argv[0]} exited with {process.returncode}:\n{tail}")
    assert watch.usage is not None
    return Usage(
        seconds=seconds,
        peak_rss=watch.usage.peak_rss,
        cpu_seconds=rusage.ru_utime + rusage.ru_stime,
    )
