"""The settle window: how a burst of arrivals becomes a few jobs, not one per file.

The first arrival for a client opens a window of ``seconds``; every arrival
for that client until it closes joins the same batch, which is then recorded
as one job. A batch that reaches ``max_files`` closes at once. Each arrival's
SQS message is deleted only after its batch is recorded and dispatched: if
recording fails, every message of the batch is redelivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from conveyor_shared.config.models import Route

Record = Callable[[Route, list[str]], Awaitable[Any]]


@dataclass
class _Batch:
    route: Route
    keys: dict[str, None] = field(default_factory=dict)
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    timer: asyncio.Task[None] | None = None


class SettleWindow:
    def __init__(self, record: Record, seconds: float, max_files: int) -> None:
        self._record = record
        self._seconds = seconds
        self._max = max_files
        self._open: dict[str, _Batch] = {}
        self._flushing: set[asyncio.Task[None]] = set()

    async def add(self, route: Route, key: str) -> None:
        """Add ``key`` to its client's open batch; return once that batch is recorded."""
        batch = self._open.get(route.client_id)
        if batch is None:
            batch = self._open[route.client_id] = _Batch(route)
            batch.timer = asyncio.create_task(self._close_after(batch, self._seconds))
        batch.keys[key] = None
        if len(batch.keys) >= self._max:
            self._close(batch)
        await asyncio.shield(batch.done)

    async def _close_after(self, batch: _Batch, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._close(batch)

    def _close(self, batch: _Batch) -> None:
        if self._open.get(batch.route.client_id) is batch:
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
