"""Helpers the tests share: waiting for conditions, writing routes files,
running services in-process or as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from conveyor_cli.localstack.processes import ManagedProcess

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T]],
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Await ``check()`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def write_routes(path: Path, routes: list[dict[str, Any]], **top: Any) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, **top, "routes": routes}, sort_keys=False))
    return path


@dataclass
class Stack:
    """One deployment of deploy/conveyor.yaml in moto, private to a test."""

    name: str
    pickup_bucket: str
    outputs: dict[str, str]

    def service_env(self, routes: Path, **extra: str) -> dict[str, str]:
        return {
            "CONVEYOR_STACK": self.name,
            "CONVEYOR_ROUTES_URI": str(routes),
            "CONVEYOR_ENVIRONMENT": "test",
            "CONVEYOR_RECEIVE_WAIT_SECONDS": "1",
            "CONVEYOR_LOG_JSON": "true",
            **extra,
        }


@dataclass
class InProcessServices:
    """Services' ``run()`` coroutines as tasks of the test's event loop."""

    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self, run: Callable[..., Coroutine[Any, Any, None]], settings: Any) -> None:
        self.tasks.append(asyncio.create_task(run(settings, self.stop)))

    async def close(self) -> None:
        self.stop.set()
        done, pending = await asyncio.wait(self.tasks, timeout=20) if self.tasks else (set(), set())
        for task in pending:
            task.cancel()
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]


def service_process(module: str, log_path: Path, env: dict[str, str]) -> ManagedProcess:
    """A service as a real OS process (for crash tests and the log format)."""
    return ManagedProcess(
        module, [sys.executable, "-m", module], log_path, env={**os.environ, **env}
    ).start()


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return lines
