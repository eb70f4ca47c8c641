"""The liveness file (conveyor_shared.health) on a real filesystem: fresh while
the loop beats, stale or missing fails the check, and a file that cannot be
written stops the service instead of leaving it up and reported unhealthy."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from conveyor_shared import health
from conveyor_shared.runtime import run_consumers
from tests.support import eventually


def test_the_check_passes_only_for_a_recent_file(tmp_path: Path) -> None:
    alive = tmp_path / "alive"
    assert health.main([str(alive), "60"]) == 1
    health.touch(alive)
    assert health.main([str(alive), "60"]) == 0
    old = time.time() - 61
    os.utime(alive, (old, old))
    assert health.main([str(alive), "60"]) == 1
    assert health.main([str(alive)]) == 2


async def test_the_beat_touches_the_file_until_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alive = tmp_path / "run" / "alive"
    monkeypatch.setenv(health.ENV_VAR, str(alive))
    stop = asyncio.Event()
    running = asyncio.create_task(run_consumers([], stop))

    async def written() -> bool:
        return alive.exists()

    await eventually(written, timeout=5, what="the first beat")
    old = time.time() - 120
    os.utime(alive, (old, old))
    stop.set()
    await asyncio.wait_for(running, timeout=5)
    assert not health.is_fresh(alive, 60), "no beat after stop"


async def test_an_unwritable_health_file_stops_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "not-a-directory").write_text("")
    monkeypatch.setenv(health.ENV_VAR, str(tmp_path / "not-a-directory" / "alive"))
    stop = asyncio.Event()
    with pytest.raises((FileExistsError, NotADirectoryError)):
        await asyncio.wait_for(run_consumers([], stop), timeout=5)
    assert stop.is_set(), "the consumers are told to stop too"
