"""What a transfer service does with each ``transfer.requested`` message (D6, D7, A3).

1. Claim the file in the ledger (a conditional write that also counts the
   attempt). A settled file, a file of another job, or a file whose lease
   another live worker holds is not transferred again: duplicates are harmless.
2. Stream it from the pick-up to the destination with ``copy()``, retrying
   transient errors within the attempt, recording progress (which also
   extends the lease).
3. Settle it ``success`` and count it in its job, in one transaction; then
   apply the route's after-delivery action and finish the job if complete.

A transient failure is recorded and re-raised: SQS redelivers the message and,
after the third receive, moves it to the dead-letter queue, where
``DeadLetterHandler`` settles the file ``fail``. A permanent failure (bad
credentials, unknown host key, permission denied, source gone) settles the
file ``fail`` at once: retrying it would only repeat the error.
"""

from __future__ import annotations

import structlog
from stamina import retry

from conveyor_shared.backends.s3 import S3Store, info_from_head
from conveyor_shared.config.loader import RoutesSource
from conveyor_shared.config.models import Route
from conveyor_shared.delivery.destinations import DestinationFactory, destination_path
from conveyor_shared.delivery.jobs import JobCompletion
from conveyor_shared.errors import NotFound, PermanentError, TransientError
from conveyor_shared.identity import content_id
from conveyor_shared.ledger.files import FileLedger
from conveyor_shared.ledger.models import FileEntry, FileStatus
from conveyor_shared.messaging.consumer import ReceivedMessage, RetryLater
from conveyor_shared.messaging.envelopes import MalformedMessage, parse_body
from conveyor_shared.messaging.models import FileFailed, TransferRequested
from conveyor_shared.messaging.publisher import EventPublisher
from conveyor_shared.transfer.copy import CopyResult, copy

log = structlog.get_logger("conveyor.delivery")


def parse_transfer(body: str) -> TransferRequested:
    message = parse_body(body)
    if not isinstance(message, TransferRequested):
        raise MalformedMessage(f"expected transfer.requested, got {type(message).__name__}")
    return message


def _bind(command: TransferRequested) -> None:
    structlog.contextvars.bind_contextvars(
        client_id=command.client_id,
        job_id=command.job_id,
        file=command.file_name,
        content_id=command.content_id,
    )


class DeliveryWorker:
    def __init__(
        self,
        *,
        destination_type: str,
        files: FileLedger,
        routes: RoutesSource,
        destinations: DestinationFactory,
        s3_client: object,
        publisher: EventPublisher,
        completion: JobCompletion,
        lease_seconds: int = 300,
        verify: bool = True,
    ) -> None:
        self._type = destination_type
        self._files = files
        self._routes = routes
        self._destinations = destinations
        self._s3 = s3_client
        self._publisher = publisher
        self._completion = completion
        self._lease = lease_seconds
        self._verify = verify

    async def handle(self, message: ReceivedMessage) -> None:
        command = parse_transfer(message.body)
        _bind(command)
        owner = message.message_id
        entry = await self._files.claim(
            command.client_id, command.content_id, command.job_id, owner, self._lease
        )
        if entry is None:
            await self._not_claimed(command)
            return
        route = (await self._routes.get()).route_for_client(command.client_id)
        if route is None or route.destination.type != self._type:
            reason = (
                f"route for client {command.client_id} was removed from the configuration"
                if route is None
                else f"route's destination is now {route.destination.type}, not {self._type}; "
                "resend the file"
            )
            await fail_file(
                self._files,
                self._publisher,
                self._completion,
                entry,
                reason,
                "permanent",
                owner=owner,
            )
            return
        log.info(
            "transfer.started", attempt=entry.send_attempts, size=entry.size, destination=self._type
        )
        try:
            result, where = await self._deliver(route, command, owner)
        except PermanentError as exc:
            await fail_file(
                self._files,
                self._publisher,
                self._completion,
                entry,
                str(exc),
                "permanent",
                owner=owner,
            )
            return
        except Exception as exc:
            kind = "transient" if isinstance(exc, TransientError) else type(exc).__name__
            await self._files.record_attempt_failure(
                entry.client_id, entry.content_id, owner, str(exc) or kind, kind
            )
            log.warning(
                "transfer.attempt_failed",
                attempt=entry.send_attempts,
                error=str(exc),
                error_kind=kind,
            )
            raise
        if not await self._files.settle(entry, FileStatus.SUCCESS, owner=owner, delivered_to=where):
            log.warning("transfer.lease_lost", reason="settled by another worker meanwhile")
        log.info(
            "transfer.delivered",
            to=where,
            bytes=result.size,
            seconds=round(result.seconds, 3),
            mb_per_s=round(result.size / max(result.seconds, 1e-6) / 1e6, 1),
            server_side=result.server_side,
            verified=list(result.verified),
            attempt=entry.send_attempts,
        )
        await self._after_delivery(route, command)
        await self._completion.settle_job(command.job_id)

    @retry(on=TransientError, attempts=3, wait_initial=0.5, wait_max=10.0, timeout=None)
    async def _deliver(
        self, route: Route, command: TransferRequested, owner: str
    ) -> tuple[CopyResult, str]:
        source = S3Store(self._s3, command.source.bucket)
        try:
            head = await source.head(command.source.key)
        except NotFound:
            raise PermanentError(
                f"{command.source.uri} was deleted from the pick-up before delivery"
            ) from None
        if content_id(head, command.source.key) != command.content_id:
            raise PermanentError(
                f"{command.source.uri} was replaced by different content before delivery; "
                "the new upload is handled as a file of its own"
            )
        destination = await self._destinations.open(route.destination)
        path = destination_path(route, command.source.key)

        async def progress(done: int) -> None:
            if not await self._files.record_progress(
                command.client_id, command.content_id, owner, done, self._lease
            ):
                raise TransientError("lost the file's lease to another worker")

        result = await copy(
            source,
            info_from_head(command.source.key, head),
            destination,
            path,
            verify=self._verify,
            progress=progress,
        )
        return result, destination.describe(path)

    async def _not_claimed(self, command: TransferRequested) -> None:
        entry = await self._files.get(command.client_id, command.content_id)
        if entry is None:
            raise MalformedMessage("no ledger entry for this transfer")
        if entry.job_id != command.job_id:
            log.info(
                "transfer.skipped",
                reason="file was resent in a newer job",
                current_job=entry.job_id,
            )
        elif entry.settled:
            # A redelivery after this very message's handler stopped early:
            # finish what it left undone (each step is idempotent).
            log.info("transfer.skipped", reason=f"file is already {entry.status.value}")
            if entry.status is FileStatus.SUCCESS:
                route = (await self._routes.get()).route_for_client(command.client_id)
                if route is not None:
                    await self._after_delivery(route, command)
            await self._completion.settle_job(command.job_id)
        else:
            log.info(
                "transfer.skipped",
                reason="another worker holds this file",
                lease_owner=entry.lease_owner,
            )

    async def _after_delivery(self, route: Route, command: TransferRequested) -> None:
        if route.after_delivery == "keep":
            return
        pickup = S3Store(self._s3, command.source.bucket)
        try:
            if route.after_delivery == "archive" and route.archive is not None:
                archive = S3Store(self._s3, route.archive.bucket, route.archive.prefix)
                relative = destination_path(route, command.source.key)
                info = await pickup.stat(command.source.key)
                await archive.copy_from(pickup, info, relative)
            await pickup.delete(command.source.key)
        except NotFound:
            pass  # already moved by an earlier attempt
        except Exception as exc:
            # The delivery itself succeeded; a file left in the pick-up is
            # recognised as already delivered and not sent again.
            log.error("pickup.cleanup_failed", action=route.after_delivery, error=str(exc))
            return
        log.info("pickup.cleaned", action=route.after_delivery, key=command.source.key)


async def fail_file(
    files: FileLedger,
    publisher: EventPublisher,
    completion: JobCompletion,
    entry: FileEntry,
    reason: str,
    kind: str,
    *,
    owner: str | None = None,
) -> None:
    """Settle ``entry`` as ``fail``, publish ``file.failed`` once, finish its job if complete."""
    if await files.settle(entry, FileStatus.FAIL, owner=owner, error=reason, error_kind=kind):
        log.error("transfer.failed", reason=reason, error_kind=kind, attempts=entry.send_attempts)
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
    await completion.settle_job(entry.job_id)


class DeadLetterHandler:
    """Consumes a transfer queue's dead-letter queue: a message lands there after
    its third failed receive, and its file becomes ``fail`` (D7)."""

    #: An unreadable dead letter stays for an operator; look again after this long.
    PARK_SECONDS = 12 * 3600

    def __init__(
        self, files: FileLedger, publisher: EventPublisher, completion: JobCompletion
    ) -> None:
        self._files = files
        self._publisher = publisher
        self._completion = completion

    async def handle(self, message: ReceivedMessage) -> None:
        try:
            command = parse_transfer(message.body)
        except MalformedMessage as exc:
            log.error("dead_letter.unreadable", reason=str(exc), body=message.body[:500])
            raise RetryLater(
                self.PARK_SECONDS, "left in the dead-letter queue for an operator"
            ) from None
        _bind(command)
        entry = await self._files.get(command.client_id, command.content_id)
        if entry is None or entry.job_id != command.job_id:
            log.warning("dead_letter.stale", reason="no matching ledger entry")
            return
        if entry.settled:
            await self._completion.settle_job(entry.job_id)
            return
        reason = f"failed {entry.send_attempts} attempts; last error: {entry.last_error or 'none'}"
        await fail_file(
            self._files,
            self._publisher,
            self._completion,
            entry,
            reason,
            entry.error_kind or "exhausted",
        )
