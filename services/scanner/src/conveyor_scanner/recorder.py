"""Recording picked-up files and dispatching them at once (D4, D5, D8, D12).

For the keys of one route:

1. Read each object once (``GetObject``, which says what a HEAD would):
   its version and content identity (``identity.py``: a SHA-256 S3 kept,
   else the bytes just read). Gone: skipped. Bad name: refused once,
   reported to ops and moved to ``conveyor-quarantine/`` in the same bucket.
2. Reserve them in a job: arrivals join the client's open batch
   (``batches.py``); a ``.done`` file's batch or a scan's finds get a job
   of their own.
3. Record each file with a conditional put. An existing entry means: the
   same upload seen again (nothing to do); a settled file with bypass on, or
   one that had failed (reset and send again); a file of the same content
   still in flight (left in the pick-up and noted on that entry, to be
   decided the moment it settles: ``pickup.recheck``); otherwise a duplicate
   of a delivered file (exactly its version removed from the pick-up, not
   sent). Reserved files that were not recorded are given back to the job.
4. Send one ``transfer.requested`` per recorded file, in batches of ten.

No write marks each file dispatched: one update per lot marks the job
(``dispatched``, ``givenBack``). A job that reserved more than it marked
lost a send (the scanner stopped between the puts and the send); the next
scan's ``repair`` sends its files that no worker has taken again. A surplus
message is harmless, since only one claim wins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import structlog

from conveyor_scanner.batches import JobBatches
from conveyor_scanner.identities import KnownIdentities
from conveyor_scanner.keys import rejection
from conveyor_scanner.refused import RefusedFiles
from conveyor_shared.backends.s3 import S3Store, object_version
from conveyor_shared.config.models import Route
from conveyor_shared.delivery.destinations import destination_path
from conveyor_shared.errors import NotFound
from conveyor_shared.identity import (
    etag_of,
    legacy_content_id,
    sha256_of,
    stored_content_id,
    vouched_hashes,
)
from conveyor_shared.ledger.dynamo import epoch, now_iso, older_than
from conveyor_shared.ledger.files import FileLedger
from conveyor_shared.ledger.jobs import JobLedger
from conveyor_shared.ledger.models import FileEntry, FileStatus
from conveyor_shared.messaging.publisher import CommandSender, EventPublisher

log = structlog.get_logger("conveyor.scanner")
T = TypeVar("T")


@dataclass(frozen=True)
class PickedUp:
    key: str
    content_id: str
    version: str
    size: int
    etag: str
    #: False for a held duplicate that a newer upload of its key replaced.
    current: bool = True
    #: Hashes S3 vouched for (an MD5 ETag), so the worker need not ask again.
    hashes: Mapping[str, str] = field(default_factory=dict)
    modified: datetime | None = None


class JobRecorder:
    def __init__(
        self,
        *,
        files: FileLedger,
        jobs: JobLedger,
        batches: JobBatches,
        senders: Mapping[str, CommandSender],
        publisher: EventPublisher,
        s3_client: Any,
        parallel: int = 32,
        repair_grace: float = 120.0,
        identities: KnownIdentities | None = None,
        legacy_identities: bool = False,
    ) -> None:
        self._files = files
        self._jobs = jobs
        self._batches = batches
        self._legacy = legacy_identities
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

    async def arrived(self, route: Route, keys: Sequence[str]) -> str | None:
        """Record and dispatch ``keys``, just arrived in ``route``'s pick-up, in the
        client's open batch; the job's id, or None if nothing was new."""
        picked = await self._read_all(route, keys)
        if not picked:
            return None
        job_id = await self._batches.join(route, len(picked))
        await self._record_into(route, job_id, picked)
        return job_id

    async def record(self, route: Route, keys: Sequence[str]) -> str | None:
        """Record ``keys`` (of ``route``'s pick-up, found together) as a job of
        their own; its id, or None if nothing in them was new."""
        picked = await self._read_all(route, keys)
        if not picked:
            return None
        return await self._batches.own_job(
            route, lambda job_id: self._record_into(route, job_id, picked)
        )

    async def recheck(self, route: Route, key: str, version: str) -> str | None:
        """Decide ``key`` at ``version``, held back while a file of the same content
        was in flight and released when that one settled: removed if it was
        delivered, sent (as a job of its own) if it failed and is still the
        current upload of ``key`` (a newer one is a file of its own)."""
        picked = await self._read(route, key, version=version)
        if picked is None:
            return None
        await self._files.clear_held_duplicates(route.client_id, picked.content_id)
        return await self._batches.own_job(
            route, lambda job_id: self._record_into(route, job_id, [picked])
        )

    async def _read_all(self, route: Route, keys: Sequence[str]) -> list[PickedUp]:
        picked = await self._bounded(self._read(route, k) for k in dict.fromkeys(keys))
        return [p for p in picked if p is not None]

    async def _record_into(
        self, route: Route, job_id: str, picked: Sequence[PickedUp]
    ) -> list[FileEntry]:
        outcomes = await self._bounded(self._record_one(route, job_id, p) for p in picked)
        ours = [entry for entry in outcomes if entry is not None]
        await self._send(route, ours)
        # The job's one mark for the lot: sent, and reserved but not recorded.
        await self._jobs.recorded(job_id, dispatched=len(ours), given_back=len(picked) - len(ours))
        if route.after_delivery == "keep" and self._identities is not None:
            # A kept file stays in the pick-up: scans recognise it by this record.
            await self._bounded(self._identities.remember(route.pickup.bucket, p) for p in picked)
        return ours

    async def _read(self, route: Route, key: str, version: str | None = None) -> PickedUp | None:
        """``key`` as it is now, or exactly ``version`` of it; None if gone or refused."""
        if reason := rejection(destination_path(route, key)):
            await self._refused.refuse(route, key, reason)
            return None
        pickup = S3Store(self._s3, route.pickup.bucket)
        try:
            async with pickup.read(key, version=version) as (head, chunks):
                found = object_version(head)
                if version is not None and found != version:
                    raise NotFound(f"{key} at {version}")  # unversioned bucket, replaced since
                identity = stored_content_id(head, key) or await sha256_of(chunks)
            current = version is None or await self._is_current(pickup, key, found)
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
            vouched_hashes(head),
            head.get("LastModified"),
        )

    @staticmethod
    async def _is_current(pickup: S3Store, key: str, version: str) -> bool:
        try:
            return object_version(await pickup.head(key)) == version
        except NotFound:  # deleted since: a delete marker is current
            return False

    async def _known_identity(self, route: Route, identity: str, legacy: str) -> str:
        """``identity``, unless the file is already in the ledger under the
        identity entries were keyed by before (an MD5 ETag, ...): then that one,
        so a file delivered before is still known. Only with
        ``legacy_identities`` on (a ledger from before SHA-256 identities): it
        costs a read per file."""
        if (
            not self._legacy
            or legacy == identity
            or await self._files.get(route.client_id, legacy) is None
        ):
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
            source_hashes=dict(obj.hashes) or None,
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
            if existing.status is FileStatus.SUCCESS and route.after_delivery == "delete":
                # Delivered, but its cleanup was lost: finish it.
                await S3Store(self._s3, route.pickup.bucket).delete(obj.key, version=obj.version)
                bound.info("pickup.cleaned", key=obj.key, version=obj.version, late=True)
            return True, None  # seen before (a repeated event); scans repair a lost send
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

    async def requeue(self, route: Route, entry: FileEntry) -> None:
        """Send ``entry``'s transfer again (its first message was lost or its worker
        died); the transfer's claim makes a surplus message harmless."""
        await self._send(route, [entry])

    async def _send(self, route: Route, entries: Sequence[FileEntry]) -> None:
        if not entries:
            return
        sender = self._senders[route.destination.type]
        await sender.send_many([e.transfer_request() for e in entries])

    async def repair(self, route: Route, active: Sequence[FileEntry]) -> None:
        """Send again the files of ``route`` whose scanner stopped between
        recording and sending them: in a job that counts fewer files sent (or
        given back) than reserved, those no worker has taken, older than
        ``repair_grace``. ``active`` are the client's active entries."""
        waiting: dict[str, list[FileEntry]] = {}
        for entry in active:
            if (
                entry.send_attempts == 0
                and not (entry.lease_expires or 0) > epoch()
                and older_than(entry.active_since, self._repair_grace)
            ):
                waiting.setdefault(entry.job_id, []).append(entry)
        for job_id, entries in waiting.items():
            job = await self._jobs.get(job_id)
            if job is None:
                log.error("file.orphaned", client_id=route.client_id, job_id=job_id)
            elif self._batches.lost_sends(job):
                log.warning(
                    "file.redispatched",
                    job_id=job_id,
                    client_id=route.client_id,
                    files=[e.file_name for e in entries],
                    reason="the scanner stopped between recording and sending them",
                )
                await self._send(route, entries)
                await self._jobs.recorded(job_id, dispatched=len(entries), given_back=0)
