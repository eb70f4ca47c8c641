"""A worker's liveness, for a container health check: a file whose time says
the service's event loop ran recently.

The queue services answer no HTTP, and ECS already replaces a task whose
process exits (``run_consumers`` re-raises a dead consumer, so the service
exits). What it cannot see is a process that is up but stuck: an event loop
blocked by a synchronous call, a deadlock. With ``CONVEYOR_HEALTH_FILE`` set,
``beat`` touches that file every ``BEAT_SECONDS`` from the loop the consumers
run on; the task definition's health check runs

    python -m conveyor_shared.health <file> <max age in seconds>

which exits 1 when the file is missing or older than the bound, and ECS then
replaces the task (its messages become visible again and another task takes
them). The file holds nothing but its time: no secret, no state.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

ENV_VAR = "CONVEYOR_HEALTH_FILE"
#: How often the file is touched; a health check's bound should be several of these.
BEAT_SECONDS = 10.0


def health_file() -> Path | None:
    """The file this process keeps fresh, if the environment names one."""
    value = os.environ.get(ENV_VAR)
    return Path(value) if value else None


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    os.utime(path)  # an existing file's time moves too


async def beat(path: Path, stop: asyncio.Event, every: float = BEAT_SECONDS) -> None:
    """Touch ``path`` every ``every`` seconds until ``stop`` is set."""
    while not stop.is_set():
        touch(path)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


def is_fresh(path: Path, max_age: float, now: float | None = None) -> bool:
    try:
        touched = path.stat().st_mtime
    except FileNotFoundError:
        return False
    return (time.time() if now is None else now) - touched <= max_age


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m conveyor_shared.health <file> <max age in seconds>\n")
        return 2
    path, max_age = Path(args[0]), float(args[1])
    if is_fresh(path, max_age):
        return 0
    sys.stderr.write(f"unhealthy: {path} missing or older than {max_age:g} s\n")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
