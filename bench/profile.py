"""Where a service's CPU goes: ``py-spy record`` on its process during a leg.

py-spy samples the process from outside (no change to the service). With
``--gil`` it keeps only the thread holding the GIL at each sample, so the
samples are the Python CPU time: an event loop waiting in ``epoll`` and a
thread blocked in ``connect`` or ``getaddrinfo`` (which release the GIL) are
not counted. Without it, threads blocked in C calls counted as running here
and the samples added up to several times the process's CPU. The raw output
is one line per distinct stack (``frame;frame;... count``, outermost first);
``top_functions`` turns it into the functions that held the CPU themselves
(self), their packages, and Conveyor's functions under which it was spent
(inclusive). Milliseconds per file are each share of the process's CPU time
per file as the kernel counted it (``cpu_ms_per_file``), not sample counts.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Samples a second: enough for functions of a few ms per file over a leg, and
#: cheap (py-spy reads the process's memory without stopping it).
RATE = 100
#: ``function (path/to/module.py:123)``: the line number is dropped, so a
#: function counts once however many of its lines were sampled.
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<path>.*?)(?::\d+)?\)$")


def py_spy() -> str:
    """The ``py-spy`` executable (the dev group installs it into the project's venv)."""
    found = shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy is not installed: uv sync (dev group) or uv run --with py-spy")
    return found


@dataclass
class Recording:
    """One ``py-spy record`` of one process: its stacks, once the recording ended."""

    name: str
    output: Path
    stacks: Counter[tuple[str, ...]] = field(default_factory=Counter)


@contextlib.contextmanager
def recording(name: str, pid: int, output: Path) -> Iterator[Recording]:
    """Sample ``pid`` while the block runs; the stacks are read when it ends.
    py-spy's own messages go to ``output`` with the suffix ``.log``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    found = Recording(name, output)
    argv = [py_spy(), "record", "--pid", str(pid), "--rate", str(RATE), "--nonblocking"]
    argv += ["--gil", "--format", "raw", "--output", str(output)]
    with output.with_suffix(".log").open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield found
        finally:
            # py-spy writes its output on SIGINT, as on Ctrl-C.
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    found.stacks = read_stacks(output)


def read_stacks(path: Path) -> Counter[tuple[str, ...]]:
    """py-spy's raw (collapsed) output: stack (outermost frame first) -> samples."""
    stacks: Counter[tuple[str, ...]] = Counter()
    if not path.exists():
        return stacks
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(_function(frame) for frame in stack.split(";"))] += int(count)
    return stacks


def _function(frame: str) -> str:
    """``copy (conveyor_shared/transfer/copy.py)`` from a frame with its line number;
    the path is shortened to what follows ``site-packages/`` or ``src/``."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["path"]
    for marker in ("site-packages/", "/src/", "lib/python3.11/"):
        if marker in path:
            path = path.rsplit(marker, 1)[1]
            break
    return f"{match['function']} ({path})"


def _package(function: str) -> str:
    """The top-level package of a shortened frame (``botocore``, ``asyncio``...)."""
    path = function.rsplit(" (", 1)[-1].rstrip(")")
    head = path.split("/", 1)[0]
    return head.removesuffix(".py") if head else path


def top_functions(
    stacks: Counter[tuple[str, ...]], cpu_ms_per_file: float, limit: int = 15
) -> dict[str, Any]:
    """Where the samples went, as samples, shares and ms per file: the functions
    that held the CPU themselves (self), the packages they belong to, and
    Conveyor's own functions the CPU was spent under (inclusive, each function
    once per stack; the event loop and ``main`` would top any inclusive list)."""
    total = sum(stacks.values())
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    under: Counter[str] = Counter()
    for stack, count in stacks.items():
        if stack:
            own[stack[-1]] += count
            packages[_package(stack[-1])] += count
        for function in set(stack):
            if "conveyor_" in function:
                under[function] += count

    def listed(counts: Counter[str]) -> list[dict[str, Any]]:
        return [
            {
                "function": function,
                "samples": samples,
                "share": round(samples / max(total, 1), 3),
                "ms_per_file": round(samples / max(total, 1) * cpu_ms_per_file, 2),
            }
            for function, samples in counts.most_common(limit)
        ]

    return {
        "samples": total,
        "rate_hz": RATE,
        "cpu_ms_per_file": cpu_ms_per_file,
        "self": listed(own),
        "packages": listed(packages),
        "inclusive": listed(under),
    }


def profile_text(name: str, profile: dict[str, Any]) -> str:
    """A profile for the terminal: the top functions by self and by inclusive time."""
    lines = [
        f"{name}: {profile['samples']} samples at {profile['rate_hz']} Hz, "
        f"{profile['cpu_ms_per_file']} ms of CPU per file"
    ]
    headings = {
        "self": "by self time",
        "packages": "by package (self time)",
        "inclusive": "Conveyor's functions, by inclusive time",
    }
    for kind, heading in headings.items():
        lines.append(f"  {heading}:")
        lines += [
            f"    {row['share'] * 100:5.1f} %  {row['ms_per_file']:6.2f} ms/file  {row['function']}"
            for row in profile[kind]
        ]
    return "\n".join(lines)
