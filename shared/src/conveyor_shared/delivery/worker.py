"""What a transfer service does with each ``transfer.requested`` message (D6, D7, A3).

1. Claim the file in the ledger under a token made for this claim (a
   conditional write that also counts the attempt). A settled file or a file
   of another job is not transferred again; a file whose lease another live
   worker holds keeps its message until that lease ends.
2. Hold the destination path (one upload of a key at a time, never an older
   one over a newer one delivered), then stream exactly the recorded S3
   version with ``copy()``, retrying blips within the attempt, while both
   leases are renewed in the background; a worker that loses one stops.
3. Settle it ``success`` (with how it was verified) and count it in its job,
   in one transaction; only then apply the route's after-delivery action to
   that version, and finish the job if complete.

A failed attempt is recorded in the file's history and its message comes back
after the route's retry delay (``retry_delays_seconds``, sized for outages).
After the third failure the message goes on to the dead-letter queue, where
``DeadLetterHandler`` settles the file ``fail``. A permanent failure (unknown
host key, permission denied, source gone) settles the file ``fail`` at once;
a refused login first reads the secret again, in case it was rotated.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NoReturn, TypeVar

import structlog
from stamina import retry

from conveyor_shared.backends.s3 import S3Store, info_from_head, version_id
from conveyor_shared.config.loader import RoutesSource
from conveyor_shared.config.models import Route
from conveyor_shared.delivery.cleanup import PickupCleaner
from conveyor_shared.delivery.destinations import DestinationFactory, destination_path
from conveyor_shared.delivery.failures import (
    AfterSettle,
    bind_transfer,
    fail_exhausted,
    fail_file,
    parse_transfer,
    tell_settled,
)
from conveyor_shared.delivery.jobs import JobCompletion
from conveyor_shared.errors import (
    ConveyorError,
    CredentialsRefused,
    NotFound,
    PermanentError,
    TransientError,
)
from conveyor_shared.identity import etag_of
from conveyor_shared.ledger.claims import new_owner
from conveyor_shared.ledger.dynamo import epoch
from conveyor_shared.ledger.files import FileLedger
from conveyor_shared.ledger.models import FileEntry, FileStatus
from conveyor_shared.ledger.paths import DestinationPaths, PathHold
from conveyor_shared.messaging.consumer import LeaveMessage, ReceivedMessage, RetryLater
from conveyor_shared.messaging.envelopes import MalformedMessage
from conveyor_shared.messaging.models import TransferRequested
from conveyor_shared.messaging.publisher import EventPublisher
from conveyor_shared.secrets import SecretStore
from conveyor_shared.transfer.copy import CopyResult, copy
from conveyor_shared.transfer.protocols import ObjectInfo

log = structlog.get_logger("conveyor.delivery")
T = TypeVar("T")


Renewal = Callable[[], Awaitable[bool]]


class PathTurn:
    """This worker's hold on a destination path while one file goes there."""

    def __init__(
        self, paths: DestinationPaths | None, name: str, owner: str, seconds: int, entry: FileEntry
    ):
        self._paths, self._name, self._owner, self._seconds = paths, name, owner, seconds
        self._holder = f"{entry.client_id}/{entry.content_id}"
        self._recorded = entry.active_since or ""
        self.delivered = False

    async def take(self) -> PathHold:
        if self._paths is None:
            return PathHold(True)
        return await self._paths.hold(
            self._name, self._owner, self._seconds, self._holder, self._recorded
        )

    async def renew(self) -> bool:
        return (await self.take()).held

    async def give_back(self) -> None:
        """Free the path unless the file was delivered (then the next upload of
        the key takes it over: ``ledger/paths.py``)."""
        if self._paths is not None and not self.delivered:
            await self._paths.release(self._name, self._owner)


class LeaseLost(ConveyorError):
    """Another worker took the file over: this attempt stops where it is."""


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
        secrets: SecretStore | None = None,
        after_settle: AfterSettle | None = None,
        paths: DestinationPaths | None = None,
        lease_seconds: int = 60,
        verify: bool = True,
        max_attempts: int = 3,
        cleaner: PickupCleaner | None = None,
    ) -> None:
        self._type = destination_type
        self._files = files
        self._routes = routes
        self._destinations = destinations
        self._s3 = s3_client
        self._publisher = publisher
        self._completion = completion
        self._secrets = secrets
        self._after_settle = after_settle
        self._paths = paths
        self._lease = lease_seconds
        self._verify = verify
        self._max_attempts = max_attempts
        self._cleaner = cleaner or PickupCleaner(s3_client, linger_seconds=0)

    async def handle(self, message: ReceivedMessage) -> None:
        command = parse_transfer(message.body)
        bind_transfer(command)
        owner = new_owner()
        entry = await self._files.claim(
            command.client_id,
            command.content_id,
            command.job_id,
            owner,
            self._lease,
            self._max_attempts,
        )
        if entry is None:
            await self._not_claimed(command)
            return
        try:
            await self._transfer(entry, owner)
        except BaseException:
            # Whatever cut the attempt short (a stop, a lost message, an
            # error) frees the file at once and does not count the attempt.
            # A claim already settled or given up is not ours to release.
            if await asyncio.shield(
                self._files.release_claim(entry.client_id, entry.content_id, owner)
            ):
                log.warning("transfer.released", reason="interrupted; not counted as an attempt")
            raise

    async def _transfer(self, entry: FileEntry, owner: str) -> None:
        route = (await self._routes.get()).route_for_client(entry.client_id)
        if route is None or route.destination.type != self._type:
            reason = (
                f"route for client {entry.client_id} was removed from the configuration"
                if route is None
                else f"route's destination is now {route.destination.type}, not {self._type}; "
                "resend the file"
            )
            await self._fail(entry, reason, "permanent", owner)
            return
        log.info(
            "transfer.started", attempt=entry.send_attempts, size=entry.size, destination=self._type
        )
        try:
            async with self._one_version_at_a_time(route, entry, owner) as turn:
                delivered = await self._attempt(route, entry, owner, turn.renew)
                if delivered is None:
                    return
                result, where = delivered
                settled = await self._files.settle(
                    entry,
                    FileStatus.SUCCESS,
                    owner=owner,
                    delivered_to=where,
                    verified_by=result.verified_by,
                    bytes_done=result.size,
                )
                if settled is None:
                    # Someone else holds or settled the file now: what happens to
                    # the pick-up, and to the message they may share, is theirs.
                    log.warning("transfer.lease_lost", reason="settled by another worker")
                    raise LeaveMessage("the file was taken over before it was settled")
                turn.delivered = True
        except PermanentError as exc:  # superseded by a newer upload of the same key
            await self._fail(entry, str(exc), "superseded", owner)
            return
        log.info(
            "transfer.delivered",
            to=where,
            bytes=result.size,
            seconds=round(result.seconds, 3),
            mb_per_s=round(result.size / max(result.seconds, 1e-6) / 1e6, 1),
            server_side=result.server_side,
            verified=list(result.verified),
            verified_by=result.verified_by,
            attempt=entry.send_attempts,
        )
        await tell_settled(self._after_settle, settled)
        await self._after_delivery(route, entry)
        await self._completion.count(settled)

    async def _attempt(
        self, route: Route, entry: FileEntry, owner: str, renew_path: Renewal
    ) -> tuple[CopyResult, str] | None:
        """One attempt: the copy, or None when it failed for good (the file is
        settled ``fail``); a failure worth retrying is recorded and raised."""
        try:
            return await self._holding(entry, owner, self._deliver(route, entry, owner), renew_path)
        except LeaseLost as exc:
            log.warning("transfer.lease_lost", reason=str(exc))
            raise LeaveMessage(str(exc)) from None
        except PermanentError as exc:
            await self._fail(entry, str(exc), "permanent", owner)
            return None
        except Exception as exc:
            await self._attempt_failed(route, entry, owner, exc)

    @contextlib.asynccontextmanager
    async def _one_version_at_a_time(
        self, route: Route, entry: FileEntry, owner: str
    ) -> AsyncIterator[PathTurn]:
        """Hold the destination path while this file goes there, so two uploads
        of one key never write at once, and a correction recorded after this
        upload is never overwritten by it (``ledger/paths.py``)."""
        turn = PathTurn(
            self._paths, f"path/{entry.client_id}/{entry.source_key}", owner, self._lease, entry
        )
        hold = await turn.take()
        if hold.superseded_by is not None:
            raise PermanentError(
                "superseded: a newer upload of this key, recorded "
                f"{hold.superseded_by}, went to the same path; not sent over it"
            )
        if not hold.held:
            wait = max(1, self._lease // 3)
            raise RetryLater(wait, "another upload of this file is on its way to the same path")
        try:
            yield turn
        finally:
            await asyncio.shield(turn.give_back())

    async def _attempt_failed(
        self, route: Route, entry: FileEntry, owner: str, exc: Exception
    ) -> NoReturn:
        kind = "transient" if isinstance(exc, TransientError) else type(exc).__name__
        if not await self._files.record_attempt_failure(
            entry.client_id, entry.content_id, owner, str(exc) or kind, kind
        ):
            log.warning("transfer.lease_lost", reason=f"attempt failed after the lease: {exc}")
            raise LeaveMessage("the file was taken over while this attempt failed") from exc
        final = entry.send_attempts >= self._max_attempts
        # After the last attempt the message goes straight on to the
        # dead-letter queue, whose consumer settles the file ``fail`` (D7).
        delay = 0 if final else route.retry_delay(entry.send_attempts)
        log.warning(
            "transfer.attempt_failed",
            attempt=entry.send_attempts,
            error=str(exc),
            error_kind=kind,
            next_attempt_in=None if final else delay,
        )
        raise RetryLater(delay, f"attempt {entry.send_attempts} failed: {exc}") from exc

    async def _fail(self, entry: FileEntry, reason: str, kind: str, owner: str) -> None:
        settled = await fail_file(
            self._files, self._publisher, self._completion, entry, reason, kind, owner=owner
        )
        if settled is None:
            log.warning("transfer.lease_lost", reason=f"failed after the lease: {reason}")
            raise LeaveMessage("the file was taken over before it could be failed")
        await tell_settled(self._after_settle, settled)

    async def _holding(
        self, entry: FileEntry, owner: str, work: Awaitable[T], renew_path: Renewal
    ) -> T:
        """Run ``work`` while renewing the file's lease; stop it if the lease is lost.

        The lease is renewed every third of its length whatever the transfer
        is doing (connecting, committing, a server-side copy), so only a
        worker that cannot reach DynamoDB, or is not running at all, loses it.
        """
        task = asyncio.ensure_future(work)
        lost: list[str] = []

        async def renew() -> None:
            confirmed = time.monotonic()
            while True:
                await asyncio.sleep(self._lease / 3)
                try:
                    async with asyncio.timeout(self._lease / 3):
                        held = await self._files.renew_lease(
                            entry.client_id, entry.content_id, owner, self._lease
                        )
                        held = held and await renew_path()
                except Exception as exc:
                    log.warning("lease.renew_failed", error=str(exc))
                    held = time.monotonic() - confirmed < self._lease * 2 / 3
                else:
                    confirmed = time.monotonic()
                if not held:
                    lost.append("the file's lease was taken over or could not be renewed")
                    task.cancel()
                    return

        keeper = asyncio.create_task(renew())
        try:
            return await task
        except asyncio.CancelledError:
            if lost and not _cancelling():
                raise LeaseLost(lost[0]) from None
            raise
        finally:
            keeper.cancel()

    @retry(on=TransientError, attempts=3, wait_initial=0.5, wait_max=10.0, timeout=None)
    async def _deliver(self, route: Route, entry: FileEntry, owner: str) -> tuple[CopyResult, str]:
        try:
            return await self._copy(route, entry, owner)
        except CredentialsRefused:
            if self._secrets is None:
                raise
        # The secret may have been rotated since it was read: read it once more.
        log.warning("credentials.refused", action="reading the secret again")
        self._secrets.forget()
        await self._destinations.forget_credentials()
        return await self._copy(route, entry, owner)

    async def _copy(self, route: Route, entry: FileEntry, owner: str) -> tuple[CopyResult, str]:
        source = S3Store(self._s3, entry.source_bucket).pinned(
            entry.source_key, entry.source_version
        )
        info = await self._source_info(source, entry)
        destination = await self._destinations.open(route.destination)
        path = destination_path(route, entry.source_key)

        async def progress(done: int) -> None:
            try:
                held = await self._files.record_progress(
                    entry.client_id, entry.content_id, owner, done, self._lease
                )
            except Exception as exc:
                # The lease keeper decides when failing renewals mean a lost lease.
                log.warning("transfer.progress_not_recorded", error=str(exc))
                return
            if not held:
                raise LeaseLost("another worker holds the file's lease now")

        try:
            result = await copy(
                source,
                info,
                destination,
                path,
                verify=self._verify or route.verify == "checksum",
                require_checksum=route.verify == "checksum",
                progress=progress,
            )
        except NotFound:
            await self._source_info(source, entry, look=True)  # raises if the version is gone
            raise
        return result, destination.describe(path)

    async def _source_info(
        self, source: S3Store, entry: FileEntry, look: bool = False
    ) -> ObjectInfo:
        """The recorded version of the picked-up file, and nothing newer.

        In a versioned pick-up the ledger says all ``copy()`` needs (size, the
        SHA-256 identity, the MD5 S3 vouched for) and every read is pinned to
        the version, so no HEAD is made; a deleted version surfaces on the
        read, and ``look`` then asks S3 whether it is gone. Without versioning
        S3 only serves the current object, so its ETag is checked first."""
        uri = f"s3://{entry.source_bucket}/{entry.source_key}"
        versioned = version_id(entry.source_version) is not None
        if versioned and entry.size is not None and not look:
            hashes = dict(entry.source_hashes or {})
            if entry.content_id.startswith("sha256:"):
                hashes["sha256"] = entry.content_id.removeprefix("sha256:")
            return ObjectInfo(
                entry.source_key, entry.size, hashes=hashes, version=entry.source_version
            )
        try:
            head = await source.head(entry.source_key)
        except NotFound:
            raise PermanentError(f"{uri} was deleted from the pick-up before delivery") from None
        if entry.source_etag and etag_of(head) != entry.source_etag:
            raise PermanentError(
                f"{uri} was replaced by different content before delivery; "
                "the new upload is handled as a file of its own"
            )
        return info_from_head(entry.source_key, head)

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
                    await self._after_delivery(route, entry)
            await self._completion.settle_job(command.job_id)
        elif entry.lease_owner is None or (entry.lease_expires or 0) < epoch():
            # Not held, yet not claimable: its attempts are used up (D7). This
            # message came back after the last one, without the receives that
            # would have sent it to the dead-letter queue.
            settled = await fail_exhausted(self._files, self._publisher, self._completion, entry)
            if settled is not None:
                await tell_settled(self._after_settle, settled)
        else:
            # Keep the message until the holder settles or its lease runs out:
            # if that worker died, this message is what delivers the file.
            wait = max(1, (entry.lease_expires or 0) - epoch()) + 1
            raise RetryLater(wait, f"another worker holds this file for {wait} s more")

    async def _after_delivery(self, route: Route, entry: FileEntry) -> None:
        """Apply the route's after-delivery action to exactly the delivered version:
        copied to the archive now, deleted from the pick-up soon (``cleanup.py``)."""
        if route.after_delivery == "keep":
            return
        pickup = S3Store(self._s3, entry.source_bucket)
        key, version = entry.source_key, entry.source_version
        if route.after_delivery == "archive" and route.archive is not None:
            archive = S3Store(self._s3, route.archive.bucket, route.archive.prefix)
            try:
                info = await pickup.stat(key, version)
                await archive.copy_from(pickup, info, destination_path(route, key))
            except NotFound:
                return  # already moved by an earlier attempt
            except Exception as exc:
                # The delivery itself succeeded; a file left in the pick-up is
                # recognised as already delivered and not sent again.
                log.error("pickup.archive_failed", key=key, version=version, error=str(exc))
                return
        self._cleaner.delete(entry.source_bucket, key, version)


def _cancelling() -> bool:
    """Whether the running task itself is being cancelled (a stop), as opposed
    to a child task cancelled by a lost lease."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
