"""The settle window: how a burst of arrivals becomes a few jobs, not one per file.

The first arrival for a client opens a batch. The batch closes when the
client's arrivals have been quiet for ``quiet_seconds``, or ``max_wait_seconds``
after it opened, or when it holds ``max_files``, whichever comes first; it is
then recorded as one job. So a burst of a thousand files uploaded over a few
seconds is one job, and a steady trickle still starts a job at least every
``max_wait_seconds``.

Each arrival's SQS message is deleted only after its batch is recorded and
dispatched: if recording fails, every message of the batch is redelivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from conveyor_shared.config.models import Route

Record = Callable[[Route, list[str]], Awaitable[Any]]


def _now() -> float:
    return asyncio.get_running_loop().time()


@dataclass
class _Batch:
    route: Route
    opened: float = field(default_factory=_now)
    last_arrival: float = field(default_factory=_now)
    keys: dict[str, None] = field(default_factory=dict)
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    timer: asyncio.Task[None] | None = None


class SettleWindow:
    def __init__(
        self, record: Record, quiet_seconds: float, max_wait_seconds: float, max_files: int
    ) -> None:
        self._record = record
        self._quiet = quiet_seconds
        self._max_wait = max(max_wait_seconds, quiet_seconds)
        self._max_files = max_files
        self._open: dict[str, _Batch] = {}
        self._flushing: set[asyncio.Task[None]] = set()

    async def add(self, route: Route, key: str) -> None:
        """Add ``key`` to its client's open batch; return once that batch is recorded
        (raising what recording raised)."""
        batch = self._open.get(route.client_id)
        if batch is None:
            batch = self._open[route.client_id] = _Batch(route)
            batch.timer = asyncio.create_task(self._close_when_settled(batch))
        batch.keys[key] = None
        batch.last_arrival = _now()
        if len(batch.keys) >= self._max_files:
            self._close(batch)
        await asyncio.shield(batch.done)

    async def _close_when_settled(self, batch: _Batch) -> None:
        while True:
            deadline = min(batch.last_arrival + self._quiet, batch.opened + self._max_wait)
            if _now() >= deadline:
                break
            await asyncio.sleep(deadline - _now())
        self._close(batch)

    def _close(self, batch: _Batch) -> None:
        if self._open.get(batch.route.client_id) is not batch:
            return
        del self._open[batch.route.client_id]
        if batch.timer is not None and batch.timer is not asyncio.current_task():
            batch.timer.cancel()
        task = asyncio.create_task(self._flush(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush(self, batch: _Batch) -> None:
        try:
            await self._record(batch.route, list(batch.keys))
        except Exception as exc:
            batch.done.set_exception(exc)
        else:
            batch.done.set_result(None)
