"""Recording a batch of picked-up files as one job, and dispatching it (D4, D5, D8, D12).

For a batch of keys of one route:

1. HEAD each object: its version and content identity (``identity.py``: a
   SHA-256 S3 kept, else read once; an entry under the older identity is
   found too). Gone: skipped. Bad name: refused once, reported to ops and
   moved to ``conveyor-quarantine/`` in the same bucket.
2. Create the job (``forming``) so every entry written next points at a job
   that exists.
3. Record each file with a conditional put. An existing entry means:
   the same upload seen again (nothing to do, or a repair if it was never
   dispatched); a settled file with bypass on, or one that had failed (reset
   and send again); a file of the same content still in flight (left in the
   pick-up and noted on that entry, to be decided the moment it settles:
   ``pickup.recheck``); otherwise a duplicate of a delivered file (exactly
   its version removed from the pick-up, not sent).
4. Start the job with its final file count, send one ``transfer.requested``
   per file, publish ``job.started`` once.

A crash anywhere leaves state that ``repair`` completes later without
sending anything twice: it waits ``repair_grace`` so as not to race a
recorder that is merely slow.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog

from conveyor_scanner.identities import KnownIdentities
from conveyor_scanner.keys import rejection
from conveyor_scanner.refused import RefusedFiles
from conveyor_shared.backends.s3 import S3Store, object_version
from conveyor_shared.config.models import Route
from conveyor_shared.delivery.destinations import destination_path
from conveyor_shared.errors import NotFound
from conveyor_shared.identity import (
    content_id,
    etag_of,
    legacy_content_id,
    stored_content_id,
)
from conveyor_shared.ledger.dynamo import now_iso, older_than
from conveyor_shared.ledger.files import FileLedger
from conveyor_shared.ledger.jobs import JobLedger
from conveyor_shared.ledger.models import FileEntry, FileStatus, Job, JobStatus
from conveyor_shared.messaging.models import JobStarted, S3ObjectRef, TransferRequested
from conveyor_shared.messaging.publisher import CommandSender, EventPublisher

log = structlog.get_logger("conveyor.scanner")
T = TypeVar("T")


def new_job_id(client_id: str) -> str:
    """Readable and sortable: ``H1234-20261121T101500Z-3f9a1c``."""
    return f"{client_id}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class PickedUp:
    key: str
    content_id: str
    version: str
    size: int
    etag: str
    #: False for a held duplicate that a newer upload of its key replaced.
    current: bool = True


class JobRecorder:
    def __init__(
        self,
        *,
        files: FileLedger,
        jobs: JobLedger,
        senders: Mapping[str, CommandSender],
        publisher: EventPublisher,
        s3_client: Any,
        parallel: int = 32,
        repair_grace: float = 120.0,
        identities: KnownIdentities | None = None,
    ) -> None:
        self._files = files
        self._jobs = jobs
        self._senders = senders
        self._publisher = publisher
        self._s3 = s3_client
        self._refused = RefusedFiles(s3_client, publisher)
        self._identities = identities
        self._parallel = asyncio.Semaphore(parallel)
        self._repair_grace = repair_grace

    async def _bounded(self, work: Iterable[Awaitable[T]]) -> list[T]:
        async def one(item: Awaitable[T]) -> T:
            async with self._parallel:
                return await item

        return list(await asyncio.gather(*(one(w) for w in work)))

    async def record(self, route: Route, keys: Sequence[str]) -> str | None:
        """Record ``keys`` (of ``route``'s pick-up) as one job; its id, or None if
        nothing in them was new."""
        picked = await self._bounded(self._head(route, k) for k in dict.fromkeys(keys))
        return await self._record_picked(route, [p for p in picked if p is not None])

    async def recheck(self, route: Route, key: str, version: str) -> str | None:
        """Decide ``key`` at ``version``, held back while a file of the same content
        was in flight and released when that one settled: removed if it was
        delivered, sent (as a job of its own) if it failed and is still the
        current upload of ``key`` (a newer one is a file of its own)."""
        picked = await self._head(route, key, version=version)
        if picked is None:
            return None
        await self._files.clear_held_duplicates(route.client_id, picked.content_id)
        return await self._record_picked(route, [picked])

    async def _record_picked(self, route: Route, picked: Sequence[PickedUp]) -> str | None:
        if not picked:
            return None
        job = Job(
            job_id=new_job_id(route.client_id),
            client_id=route.client_id,
            route_name=route.name,
            status=JobStatus.FORMING,
            started_at=now_iso(),
        )
        await self._jobs.create(job)
        outcomes = await self._bounded(self._record_one(route, job.job_id, p) for p in picked)
        ours = [entry for entry in outcomes if entry is not None]
        if not ours:
            await self._jobs.discard(job.job_id)
            return None
        started = await self._jobs.start(job.job_id, len(ours))
        await self._dispatch(route, ours)
        await self._announce(started or job, ours)
        return job.job_id

    async def _head(self, route: Route, key: str, version: str | None = None) -> PickedUp | None:
        """``key`` as it is now, or exactly ``version`` of it; None if gone or refused."""
        if reason := rejection(destination_path(route, key)):
            await self._refused.refuse(route, key, reason)
            return None
        pickup = S3Store(self._s3, route.pickup.bucket)
        try:
            head = await pickup.head(key, version=version)
            found = object_version(head)
            if version is not None and found != version:
                raise NotFound(f"{key} at {version}")  # unversioned bucket, replaced since
            current = version is None or await self._is_current(pickup, key, found)
            identity = await self._identity(pickup, key, head, found)
        except NotFound:
            log.info(
                "pickup.gone",
                client_id=route.client_id,
                key=key,
                version=version,
                reason="deleted before it was picked up",
            )
            return None
        return PickedUp(
            key,
            await self._known_identity(route, identity, legacy_content_id(head, key)),
            found,
            int(head["ContentLength"]),
            etag_of(head),
            current,
        )

    async def _identity(self, pickup: S3Store, key: str, head: dict[str, Any], version: str) -> str:
        """The upload's content identity, reading it only the first time."""
        if known := stored_content_id(head, key):
            return known
        if self._identities and (seen := await self._identities.get(pickup.bucket, key, version)):
            return seen
        identity = await content_id(head, key, lambda: pickup.open(key, version))
        if self._identities:
            await self._identities.remember(pickup.bucket, key, version, identity)
        return identity

    @staticmethod
    async def _is_current(pickup: S3Store, key: str, version: str) -> bool:
        try:
            return object_version(await pickup.head(key)) == version
        except NotFound:  # deleted since: a delete marker is current
            return False

    async def _known_identity(self, route: Route, identity: str, legacy: str) -> str:
        """``identity``, unless the file is already in the ledger under the
        identity entries were keyed by before (an MD5 ETag, ...): then that one,
        so a file delivered before is still known."""
        if legacy == identity or await self._files.get(route.client_id, legacy) is None:
            return identity
        log.info("file.legacy_identity", client_id=route.client_id, content_id=legacy)
        return legacy

    def _entry(self, route: Route, job_id: str, obj: PickedUp) -> FileEntry:
        now = now_iso()
        return FileEntry(
            client_id=route.client_id,
            content_id=obj.content_id,
            timestamp=now,
            status=FileStatus.PROCESSING,
            file_path=f"s3://{route.pickup.bucket}/{obj.key}",
            file_name=obj.key.rsplit("/", 1)[-1],
            send_attempts=0,
            active=True,
            job_id=job_id,
            route_name=route.name,
            size=obj.size,
            source_bucket=route.pickup.bucket,
            source_key=obj.key,
            source_version=obj.version,
            source_etag=obj.etag,
            active_since=now,
        )

    async def _record_one(self, route: Route, job_id: str, obj: PickedUp) -> FileEntry | None:
        entry = self._entry(route, job_id, obj)
        bound = log.bind(
            client_id=route.client_id,
            job_id=job_id,
            file=entry.file_name,
            content_id=obj.content_id,
        )
        if await self._files.record_new(entry):
            bound.info("file.recorded", size=obj.size, key=obj.key)
            return entry
        for _ in range(2):  # a second look if the entry settled while we held a duplicate
            existing = await self._files.get(route.client_id, obj.content_id)
            if existing is None:  # removed between our put and get: try once more
                return entry if await self._files.record_new(entry) else None
            decided, ours = await self._decide(route, entry, obj, existing, bound)
            if decided:
                return ours
        return None

    async def _decide(
        self,
        route: Route,
        entry: FileEntry,
        obj: PickedUp,
        existing: FileEntry,
        bound: Any,
    ) -> tuple[bool, FileEntry | None]:
        """What an upload whose content is already in the ledger means: (False,
        None) when the entry changed under us and must be read again."""
        if existing.source_key == obj.key and existing.source_version == obj.version:
            if existing.active:
                await self.repair(route, existing)
            return True, None
        if existing.status is FileStatus.FAIL or (existing.settled and route.bypass_file_checks):
            if not obj.current:
                bound.info(
                    "pickup.superseded",
                    key=obj.key,
                    version=obj.version,
                    reason="a newer upload of this key replaced it; that one is a file of its own",
                )
                return True, None
            if await self._files.reset_for_resend(entry, unless_version=obj.version):
                bound.info(
                    "file.resent",
                    previous_status=existing.status.value,
                    previous_job=existing.job_id,
                    bypass=route.bypass_file_checks,
                )
                return True, entry
            return True, None
        if existing.active:
            return await self._hold(existing, obj, bound), None
        bound.info("file.duplicate", of=existing.file_path, delivered=existing.timestamp)
        if not (route.after_delivery == "keep" and existing.source_key == obj.key):
            # Exactly this upload: a newer one under the same key is a file of its own.
            await S3Store(self._s3, route.pickup.bucket).delete(obj.key, version=obj.version)
            bound.info("pickup.duplicate_removed", key=obj.key, version=obj.version)
        return True, None

    async def _hold(self, existing: FileEntry, obj: PickedUp, bound: Any) -> bool:
        """Keep a duplicate of a file in flight until that one settles (if it then
        fails, this one is sent). False if it settled meanwhile."""
        held = {(h.key, h.version) for h in existing.held_duplicates or []}
        if (obj.key, obj.version) not in held and not await self._files.hold_duplicate(
            existing.client_id, existing.content_id, existing.job_id, obj.key, obj.version
        ):
            return False
        bound.info(
            "file.duplicate_in_flight",
            of=existing.file_path,
            reason="same content is being delivered; decided when it settles",
        )
        return True

    async def _dispatch(self, route: Route, entries: Sequence[FileEntry]) -> None:
        await self._send(route, entries)
        await self._bounded(
            self._files.mark_dispatched(e.client_id, e.content_id, e.job_id) for e in entries
        )

    async def requeue(self, route: Route, entry: FileEntry) -> None:
        """Send ``entry``'s transfer again (its first message was lost or its worker
        died); the transfer's claim makes a surplus message harmless."""
        await self._send(route, [entry])

    async def _send(self, route: Route, entries: Sequence[FileEntry]) -> None:
        sender = self._senders[route.destination.type]
        await sender.send_many(
            [
                TransferRequested(
                    client_id=e.client_id,
                    content_id=e.content_id,
                    job_id=e.job_id,
                    file_name=e.file_name,
                    source=S3ObjectRef(
                        bucket=e.source_bucket,
                        key=e.source_key,
                        size=e.size,
                        etag=e.source_etag,
                        version=e.source_version,
                    ),
                )
                for e in entries
            ]
        )

    async def _announce(self, job: Job, entries: Sequence[FileEntry]) -> None:
        log.info(
            "job.started",
            job_id=job.job_id,
            client_id=job.client_id,
            started_at=job.started_at,
            total=len(entries),
            files=[{"file": e.file_name, "status": e.status.value} for e in entries],
        )
        await self._publisher.publish(
            JobStarted(
                job_id=job.job_id,
                client_id=job.client_id,
                route_name=job.route_name,
                files=len(entries),
            )
        )
        await self._jobs.mark_published(job.job_id, "started")

    async def repair(self, route: Route, entry: FileEntry) -> None:
        """Finish what a recorder that stopped early left undone for ``entry``:
        start its job, dispatch it, announce the job. Idempotent."""
        if not older_than(entry.active_since, self._repair_grace):
            return
        job = await self._jobs.get(entry.job_id)
        if job is None:
            log.error(
                "file.orphaned",
                client_id=entry.client_id,
                job_id=entry.job_id,
                file=entry.file_name,
            )
            return
        if job.status is JobStatus.FORMING:
            total = len(await self._files.files_of_job(job.job_id))
            job = await self._jobs.start(job.job_id, total) or await self._jobs.get(job.job_id)
            log.warning(
                "job.repaired",
                job_id=entry.job_id,
                client_id=entry.client_id,
                total=total,
                reason="recorder stopped before starting the job",
            )
        if entry.dispatched_at is None:
            log.warning(
                "file.redispatched",
                job_id=entry.job_id,
                client_id=entry.client_id,
                file=entry.file_name,
                reason="recorder stopped before dispatching it",
            )
            await self._dispatch(route, [entry])
        if job is not None and job.started_published_at is None:
            await self._announce(job, await self._files.files_of_job(job.job_id))
