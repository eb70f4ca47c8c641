"""How a file fails for good (D7), and the dead-letter consumer that fails the
files whose messages used up their receives.

``fail_file`` is the one way a file becomes ``fail``: the transfer worker on
a permanent error, the dead-letter consumer, and the scanner's health check
all call it, so ``file.failed`` is published once and the file is counted
in its job once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from conveyor_shared import metrics
from conveyor_shared.delivery.jobs import JobCompletion
from conveyor_shared.ledger.dynamo import epoch
from conveyor_shared.ledger.files import FileLedger
from conveyor_shared.ledger.models import FileEntry, FileStatus
from conveyor_shared.messaging.consumer import ReceivedMessage, RetryLater
from conveyor_shared.messaging.envelopes import MalformedMessage, parse_body
from conveyor_shared.messaging.models import FileFailed, TransferRequested
from conveyor_shared.messaging.publisher import CommandSender, EventPublisher

log = structlog.get_logger("conveyor.delivery")

#: Told of every entry once it settled, as it is after the settle.
AfterSettle = Callable[[FileEntry], Awaitable[None]]


def parse_transfer(body: str) -> TransferRequested:
    message = parse_body(body)
    if not isinstance(message, TransferRequested):
        raise MalformedMessage(f"expected transfer.requested, got {type(message).__name__}")
    return message


def bind_transfer(command: TransferRequested) -> None:
    structlog.contextvars.bind_contextvars(
        client_id=command.client_id,
        job_id=command.job_id,
        file=command.file_name,
        content_id=command.content_id,
    )


async def fail_file(
    files: FileLedger,
    publisher: EventPublisher,
    completion: JobCompletion,
    entry: FileEntry,
    reason: str,
    kind: str,
    *,
    owner: str | None = None,
) -> FileEntry | None:
    """Settle ``entry`` as ``fail``, publish ``file.failed`` once, count it in its
    job. Without ``owner`` only a file no live worker holds is failed.

    Returns the entry as settled (by this call or an earlier one); None when a
    live worker holds it, which then decides its fate.
    """
    settled = await files.settle(entry, FileStatus.FAIL, owner=owner, error=reason, error_kind=kind)
    if settled is not None:
        log.error("transfer.failed", reason=reason, error_kind=kind, attempts=entry.send_attempts)
        metrics.file_failed(kind)
        await publisher.publish(
            FileFailed(
                job_id=entry.job_id,
                client_id=entry.client_id,
                content_id=entry.content_id,
                file_name=entry.file_name,
                attempts=entry.send_attempts,
                error=reason,
            )
        )
        await completion.count(settled)
        return settled
    current = await files.get(entry.client_id, entry.content_id)
    if current is None or current.job_id != entry.job_id:
        return entry  # resent in a newer job since: nothing of this one is left
    if not current.settled:
        return None
    await completion.settle_job(entry.job_id)
    return current


async def tell_settled(after_settle: AfterSettle | None, settled: FileEntry) -> None:
    """Run ``after_settle`` with the entry as the settle left it: duplicates may
    have been held for it while it was in flight."""
    if after_settle is not None:
        await after_settle(settled)


async def fail_exhausted(
    files: FileLedger, publisher: EventPublisher, completion: JobCompletion, entry: FileEntry
) -> FileEntry | None:
    """Fail a file that used up its attempts (D7), with its last error; as ``fail_file``."""
    reason = f"failed {entry.send_attempts} attempts; last error: {entry.last_error or 'none'}"
    return await fail_file(
        files, publisher, completion, entry, reason, entry.error_kind or "exhausted"
    )


class DeadLetterHandler:
    """Consumes a transfer queue's dead-letter queue: a message lands there after
    its third failed receive, and its file becomes ``fail`` (D7).

    Receives that made no attempt (a wait for another worker's lease, a
    release on stop) count towards the queue's limit too; a file that has not
    used its attempts is sent back to the work queue instead of failed."""

    #: An unreadable dead letter stays for an operator; the consumer cuts this
    #: to what SQS allows (12 hours from the receive).
    PARK_SECONDS = 12 * 3600

    def __init__(
        self,
        files: FileLedger,
        publisher: EventPublisher,
        completion: JobCompletion,
        requeue: CommandSender | None = None,
        max_attempts: int = 3,
        after_settle: AfterSettle | None = None,
    ) -> None:
        self._after_settle = after_settle
        self._files = files
        self._publisher = publisher
        self._completion = completion
        self._requeue = requeue
        self._max_attempts = max_attempts

    async def handle(self, message: ReceivedMessage) -> None:
        try:
            command = parse_transfer(message.body)
        except MalformedMessage as exc:
            log.error("dead_letter.unreadable", reason=str(exc), body=message.body[:500])
            raise RetryLater(
                self.PARK_SECONDS, "left in the dead-letter queue for an operator"
            ) from None
        bind_transfer(command)
        entry = await self._files.get(command.client_id, command.content_id)
        if entry is None or entry.job_id != command.job_id:
            log.warning("dead_letter.stale", reason="no matching ledger entry")
            return
        if entry.settled:
            await self._completion.settle_job(entry.job_id)
            return
        if entry.lease_owner is not None and (entry.lease_expires or 0) >= epoch():
            wait = (entry.lease_expires or 0) - epoch() + 1
            raise RetryLater(wait, "a worker is still delivering this file")
        if entry.send_attempts < self._max_attempts and self._requeue is not None:
            await self._requeue.send(command)
            log.warning(
                "dead_letter.requeued",
                attempts=entry.send_attempts,
                reason="receives without an attempt reached the queue's limit",
            )
            return
        settled = await fail_exhausted(self._files, self._publisher, self._completion, entry)
        if settled is None:
            raise RetryLater(60, "a worker took the file over meanwhile")
        await tell_settled(self._after_settle, settled)
