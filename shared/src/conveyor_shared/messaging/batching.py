"""The batch window: how a burst of messages becomes one piece of work, not
one per message (a scanner job, a Slack message, an ops alert).

The first item for a group (a client, a provider source, a job) opens a
batch. It closes when the group has been quiet for ``quiet_seconds``, or
``max_wait_seconds`` after it opened, or when it holds ``max_items``,
whichever comes first; then it is flushed as one. (With ``quiet_seconds``
equal to ``max_wait_seconds`` that is a fixed window from the first item.)

Each item's SQS message is deleted only after its batch was flushed: ``add``
returns, or raises, that item's own outcome, so a failed flush has every
message of the batch redelivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog

T = TypeVar("T")

#: Flushes one group's items; returns one outcome per item (None: done), or
#: None when every item is done.
Flush = Callable[[str, list[T]], Awaitable[Sequence[Exception | None] | None]]


def _now() -> float:
    return asyncio.get_running_loop().time()


@dataclass
class _Batch(Generic[T]):
    group: str
    opened: float = field(default_factory=_now)
    last_item: float = field(default_factory=_now)
    items: list[T] = field(default_factory=list)
    outcomes: list[asyncio.Future[None]] = field(default_factory=list)
    timer: asyncio.Task[None] | None = None


class BatchWindow(Generic[T]):
    def __init__(
        self, flush: Flush[T], *, quiet_seconds: float, max_wait_seconds: float, max_items: int
    ) -> None:
        self._flush = flush
        self._quiet = quiet_seconds
        self._max_wait = max(max_wait_seconds, quiet_seconds)
        self._max_items = max_items
        self._open: dict[str, _Batch[T]] = {}
        self._flushing: set[asyncio.Task[None]] = set()

    async def add(self, group: str, item: T) -> None:
        """Add ``item`` to ``group``'s open batch; return once it was flushed."""
        batch = self._open.get(group)
        if batch is None:
            batch = self._open[group] = _Batch(group)
            batch.timer = asyncio.create_task(self._close_when_settled(batch))
        outcome = asyncio.get_running_loop().create_future()
        batch.items.append(item)
        batch.outcomes.append(outcome)
        batch.last_item = _now()
        if len(batch.items) >= self._max_items:
            self._close(batch)
        await asyncio.shield(outcome)

    async def _close_when_settled(self, batch: _Batch[T]) -> None:
        while True:
            # Each new item pushes the quiet deadline out, never past max_wait.
            left = min(batch.last_item + self._quiet, batch.opened + self._max_wait) - _now()
            if left <= 0:
                break
            await asyncio.sleep(left)
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
            results = await self._flush(batch.group, batch.items)
        except Exception as exc:
            results = [exc] * len(batch.items)
        for future, result in zip(
            batch.outcomes, results or [None] * len(batch.items), strict=True
        ):
            if future.done():
                continue
            if result is None:
                future.set_result(None)
            else:
                future.set_exception(result)
