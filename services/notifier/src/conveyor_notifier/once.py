"""Sending a notification exactly once per key, for one item or a batch.

Each item names its notification (``key``) and the SQS message that asked for
it (``owner``). Items already sent are skipped; items another live worker is
sending come back later (``RetryLater``); the rest are sent together in one
message and then marked sent. A failed send releases its claims so the
redelivered messages can claim again at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from conveyor_notifier.records import ClaimState, NotificationRecords
from conveyor_shared.messaging.consumer import RetryLater

log = structlog.get_logger("conveyor.notifier")

#: Sends one message covering the items at the given indices; returns the
#: transport's receipt (message id), if it gives one.
Send = Callable[[Sequence[int]], Awaitable[str | None]]


@dataclass(frozen=True)
class Pending:
    key: str
    #: The SQS message id.
    owner: str
    #: How many times SQS has handed this message out.
    receive_count: int = 1


class OnceSender:
    def __init__(self, records: NotificationRecords, held_retry_seconds: int = 10) -> None:
        self._records = records
        self._held_retry = held_retry_seconds

    def _held(self, item: Pending, expires_in: int) -> RetryLater:
        """Look again soon the first time (the other worker is usually done in
        seconds); after that, once its lease is over, so that a slow send cannot
        push this duplicate into the dead-letter queue."""
        delay = min(expires_in, self._held_retry) if item.receive_count <= 1 else expires_in
        return RetryLater(delay, f"{item.key} is being sent by another worker")

    async def send(self, items: Sequence[Pending], send: Send, what: str) -> list[Exception | None]:
        """Send what is not sent yet; one outcome per item (None: sent or skipped).

        Items with the same key (a duplicate event in the same batch) share the
        first one's claim and outcome.
        """
        first: dict[str, int] = {}
        for index, item in enumerate(items):
            first.setdefault(item.key, index)
        claims = await asyncio.gather(
            *(self._records.claim(items[i].key, items[i].owner, what) for i in first.values())
        )
        outcome: dict[str, Exception | None] = {}
        mine: list[int] = []
        for (key, index), claim in zip(first.items(), claims, strict=True):
            if claim.state is ClaimState.SENT:
                log.info("notice.already_sent", notice=key)
                outcome[key] = None
            elif claim.state is ClaimState.HELD:
                outcome[key] = self._held(items[index], claim.expires_in)
            else:
                mine.append(index)
        if mine:
            failure = await self._send_claimed([items[i] for i in mine], mine, send)
            outcome |= {items[i].key: failure for i in mine}
        return [outcome[item.key] for item in items]

    async def _send_claimed(
        self, claimed: list[Pending], indices: list[int], send: Send
    ) -> Exception | None:
        try:
            receipt = await send(indices)
        except Exception as exc:
            released = await asyncio.gather(
                *(self._records.release(p.key, p.owner) for p in claimed), return_exceptions=True
            )
            if any(isinstance(r, BaseException) for r in released):
                log.warning("notice.release_failed", reason="the claims expire with their lease")
            return exc
        # Between the send above and these writes is the one window in which
        # a crash makes the redelivered message send again (see records.py).
        marked = await asyncio.gather(
            *(self._records.mark_sent(p.key, p.owner, receipt) for p in claimed)
        )
        for pending, ok in zip(claimed, marked, strict=True):
            if not ok:
                log.warning(
                    "notice.claim_lost", notice=pending.key, reason="lease expired mid-send"
                )
        return None
