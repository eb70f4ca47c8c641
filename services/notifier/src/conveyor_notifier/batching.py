"""The batch window: how a burst of events becomes one message, not one per event.

The first item for a group (a provider source, a job) opens a window of
``seconds``; every item for that group until it closes joins the batch,
which is then flushed as one message. A batch that reaches ``max_items``
closes at once. Each item's SQS message is deleted only after its batch
was flushed: ``add`` returns (or raises) that item's own outcome, so a
failed flush has every message of the batch redelivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog

T = TypeVar("T")

#: Flushes one group's items; returns one outcome per item (None: done).
Flush = Callable[[str, list[T]], Awaitable[Sequence[Exception | None]]]


@dataclass
class _Batch(Generic[T]):
    group: str
    items: list[T] = field(default_factory=list)
    outcomes: list[asyncio.Future[None]] = field(default_factory=list)
    timer: asyncio.Task[None] | None = None


class BatchWindow(Generic[T]):
    def __init__(self, flush: Flush[T], seconds: float, max_items: int) -> None:
        self._flush = flush
        self._seconds = seconds
        self._max = max_items
        self._open: dict[str, _Batch[T]] = {}
        self._flushing: set[asyncio.Task[None]] = set()

    async def add(self, group: str, item: T) -> None:
        """Add ``item`` to ``group``'s open batch; return once it was flushed."""
        batch = self._open.get(group)
        if batch is None:
            batch = self._open[group] = _Batch(group)
            batch.timer = asyncio.create_task(self._close_after(batch))
        outcome = asyncio.get_running_loop().create_future()
        batch.items.append(item)
        batch.outcomes.append(outcome)
        if len(batch.items) >= self._max:
            self._close(batch)
        await asyncio.shield(outcome)

    async def _close_after(self, batch: _Batch[T]) -> None:
        await asyncio.sleep(self._seconds)
        self._close(batch)

    def _close(self, batch: _Batch[T]) -> None:
        if self._open.get(batch.group) is not batch:
            return
        del self._open[batch.group]
        if batch.timer is not None and batch.timer is not asyncio.current_task():
            batch.timer.cancel()
        task = asyncio.create_task(self._run(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _run(self, batch: _Batch[T]) -> None:
        # This task copied the context of the message that opened the batch;
        # its lines are about the whole batch, not that one message.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(batch=batch.group, items=len(batch.items))
        try:
            results: Sequence[Exception | None] = await self._flush(batch.group, batch.items)
        except Exception as exc:
            results = [exc] * len(batch.items)
        for future, result in zip(batch.outcomes, results, strict=True):
            if future.done():
                continue
            if result is None:
                future.set_result(None)
            else:
                future.set_exception(result)
