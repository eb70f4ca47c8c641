"""Watching dead-letter queues for operators (A4).

Every ``interval`` seconds, the number of messages in each watched queue is
compared with the number operators were last told of (kept in the
notifications table, so restarts and replicas agree). A rise is reported
once, by whichever notifier moves the recorded count first; a fall (messages
moved back or deleted) is only recorded. The messages themselves are never
touched: they stay for an operator, and the queue's CloudWatch alarm still
sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import structlog
from botocore.exceptions import ClientError

from conveyor_notifier.ops import OpsAlerts
from conveyor_notifier.records import NotificationRecords

log = structlog.get_logger("conveyor.notifier")

_NO_SUCH_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})


class DeadLetterWatch:
    def __init__(
        self,
        sqs: Any,
        queues: Sequence[str],
        records: NotificationRecords,
        ops: OpsAlerts,
        interval: float,
    ) -> None:
        self._sqs = sqs
        self._queues = list(queues)
        self._records = records
        self._ops = ops
        self._interval = interval
        self._urls: dict[str, str | None] = {}

    async def run(self, stop: asyncio.Event) -> None:
        if self._interval <= 0 or not self._queues:
            return
        log.info("dead_letters.watching", queues=self._queues, every=self._interval)
        while not stop.is_set():
            await self.check_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def check_all(self) -> None:
        for queue in self._queues:
            try:
                await self._check(queue)
            except Exception as exc:
                log.warning("dead_letters.check_failed", queue=queue, error=str(exc))

    async def _url(self, queue: str) -> str | None:
        if queue not in self._urls:
            try:
                response = await self._sqs.get_queue_url(QueueName=queue)
                self._urls[queue] = str(response["QueueUrl"])
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in _NO_SUCH_QUEUE:
                    raise
                log.warning("dead_letters.no_such_queue", queue=queue)
                self._urls[queue] = None
        return self._urls[queue]

    async def _count(self, url: str) -> int:
        response = await self._sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )
        return sum(int(v) for v in response.get("Attributes", {}).values())

    async def _check(self, queue: str) -> None:
        url = await self._url(queue)
        if url is None:
            return
        count = await self._count(url)
        reported = await self._records.dead_letters_reported(queue)
        if count == reported:
            return
        if not await self._records.move_dead_letters_reported(queue, reported, count):
            return  # another notifier got there first
        if count < reported:
            log.info("dead_letters.fewer", queue=queue, count=count, previous=reported)
            return
        if not await self._ops.dead_letters(queue, count, reported):
            # Nobody was told: undo, so the next look reports it again.
            await self._records.move_dead_letters_reported(queue, count, reported)
