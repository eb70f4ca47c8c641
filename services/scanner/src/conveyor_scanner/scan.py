"""The scheduled scan (D2, D10) and the health check (D9).

Only the scanner holding the ``scheduled-scan`` lease scans, renewing it
while it runs; a crashed holder's lease expires. The scan lists every
pick-up and records whatever the events missed. What is already recorded is
recognised without a request per key: files in flight by the client's
active entries (one query), kept files by their identity records (a batched
read per 100 keys, ``identities.py``). Then the health check looks at
entries still active after ``stale_after`` and at unfinished jobs (a sparse
index, not a table scan), and completes what an interrupted run left undone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

import structlog

from conveyor_scanner.batches import JobBatches
from conveyor_scanner.done_files import DoneFileBatches
from conveyor_scanner.identities import KnownIdentities
from conveyor_scanner.keys import is_folder_placeholder
from conveyor_scanner.recorder import JobRecorder
from conveyor_shared.backends.s3 import S3Store
from conveyor_shared.config.loader import RoutesSource
from conveyor_shared.config.models import Route
from conveyor_shared.delivery.failures import fail_file
from conveyor_shared.delivery.jobs import JobCompletion
from conveyor_shared.errors import NotFound
from conveyor_shared.ledger.dynamo import epoch, iso_ago, older_than
from conveyor_shared.ledger.files import FileLedger
from conveyor_shared.ledger.jobs import JobLedger
from conveyor_shared.ledger.locks import Leases
from conveyor_shared.ledger.models import FileEntry, Job, JobStatus
from conveyor_shared.messaging.consumer import RetryLater
from conveyor_shared.messaging.publisher import EventPublisher
from conveyor_shared.transfer.protocols import ObjectInfo

log = structlog.get_logger("conveyor.scanner")

SCAN_LEASE = "scheduled-scan"


class HealthCheck:
    def __init__(
        self,
        *,
        files: FileLedger,
        jobs: JobLedger,
        recorder: JobRecorder,
        batches: JobBatches,
        publisher: EventPublisher,
        completion: JobCompletion,
        s3_client: Any,
        stale_after: int,
        max_attempts: int,
    ) -> None:
        self._batches = batches
        self._files = files
        self._jobs = jobs
        self._recorder = recorder
        self._publisher = publisher
        self._completion = completion
        self._s3 = s3_client
        self._stale_after = stale_after
        self._max_attempts = max_attempts

    async def run(self, routes: list[Route]) -> None:
        cutoff = iso_ago(self._stale_after)
        for route in routes:
            for entry in await self._files.active_since_before(route.client_id, cutoff):
                await self._stale_entry(route, entry)
        async for job in self._jobs.unfinished():
            await self._unfinished_job(job)

    async def _unfinished_job(self, job: Job) -> None:
        if job.status is JobStatus.FORMING:
            await self._batches.look_again(job)
        elif job.complete:
            log.error(
                "job.unfinished",
                job_id=job.job_id,
                client_id=job.client_id,
                reason="every file settled but the job was never finished",
            )
            await self._completion.finish_if_complete(job)
        elif job.status is JobStatus.RUNNING and older_than(job.started_at, self._stale_after):
            await self._completion.recount(job)

    async def _stale_entry(self, route: Route, entry: FileEntry) -> None:
        bound = log.bind(
            client_id=entry.client_id,
            job_id=entry.job_id,
            file=entry.file_name,
            content_id=entry.content_id,
        )
        bound.error(
            "file.stale",
            active_since=entry.active_since,
            attempts=entry.send_attempts,
            last_error=entry.last_error,
        )
        if entry.lease_expires is not None and entry.lease_expires > epoch():
            bound.info("file.stale_but_busy", reason="a worker holds its lease")
            return
        try:
            await S3Store(self._s3, entry.source_bucket).stat(entry.source_key)
        except NotFound:
            await self._fail(
                route, entry, "the file left the pick-up before it was delivered", "permanent"
            )
            return
        if entry.send_attempts >= self._max_attempts:
            await self._fail(
                route,
                entry,
                f"gave up after {entry.send_attempts} attempts: "
                f"{entry.last_error or 'interrupted'}",
                entry.error_kind or "exhausted",
            )
            return
        bound.warning("file.requeued", reason="active past its age with no worker on it")
        await self._recorder.requeue(route, entry)

    async def _fail(self, route: Route, entry: FileEntry, reason: str, kind: str) -> None:
        """Settle ``entry`` ``fail``, then decide what was held back for it: a
        duplicate of a failed file is sent (as the transfer worker asks after
        its own settles)."""
        settled = await fail_file(
            self._files, self._publisher, self._completion, entry, reason, kind
        )
        if settled is not None and settled.settled:
            for held in settled.held_duplicates or []:
                await self._recorder.recheck(route, held.key, held.version)


class ScheduledScan:
    def __init__(
        self,
        *,
        leases: Leases,
        routes: RoutesSource,
        recorder: JobRecorder,
        done_files: DoneFileBatches,
        health: HealthCheck,
        files: FileLedger,
        identities: KnownIdentities,
        s3_client: Any,
        lease_seconds: int,
        batch_max_files: int,
    ) -> None:
        self._files = files
        self._identities = identities
        self._leases = leases
        self._routes = routes
        self._recorder = recorder
        self._done_files = done_files
        self._health = health
        self._s3 = s3_client
        self._lease_seconds = lease_seconds
        self._batch_max = batch_max_files
        self.owner = f"scanner-{uuid.uuid4().hex[:12]}"

    async def run(self, reason: str = "schedule") -> bool:
        """Scan every pick-up if no other scanner is; True if this one scanned."""
        # One owner per run: two scan messages handled at once by this very
        # process must exclude each other too.
        owner = f"{self.owner}-{uuid.uuid4().hex[:8]}"
        if not await self._leases.acquire(SCAN_LEASE, owner, self._lease_seconds):
            log.info("scan.skipped", reason="another scan holds the scan lease")
            return False
        started = datetime.now(UTC)
        try:
            log.info("scan.started", reason=reason, owner=owner)
            await self._renewing(owner, self._scan_all())
        finally:
            await self._leases.release(SCAN_LEASE, owner)
        log.info("scan.finished", seconds=round((datetime.now(UTC) - started).total_seconds(), 3))
        return True

    async def _scan_all(self) -> None:
        routes = (await self._routes.get()).routes
        for route in routes:
            await self._scan_route(route)
        await self._health.run(routes)

    async def _renewing(self, owner: str, scan: Coroutine[Any, Any, None]) -> None:
        """Run ``scan`` while renewing the scan lease every third of its length, so
        a long scan is never overlapped by another (D10); stop it if the lease
        could not be renewed."""
        task = asyncio.ensure_future(scan)

        async def renew() -> None:
            while True:
                await asyncio.sleep(self._lease_seconds / 3)
                if not await self._leases.acquire(SCAN_LEASE, owner, self._lease_seconds):
                    log.error("scan.lease_lost", reason="another scanner holds the scan lease")
                    task.cancel()
                    return

        keeper = asyncio.create_task(renew())
        try:
            await task
        finally:
            keeper.cancel()

    async def _scan_route(self, route: Route) -> None:
        pickup = S3Store(self._s3, route.pickup.bucket)
        active = await self._files.active_since_before(route.client_id, iso_ago(-86400))
        await self._recorder.repair(route, active)
        if route.trigger_on_done_file:
            try:
                await pickup.stat(route.done_file_key)
            except NotFound:
                return
            try:
                await self._done_files.take(route)
            except RetryLater:
                log.info("scan.done_file_busy", client_id=route.client_id)
            return
        listed = [
            info
            async for info in pickup.list(route.pickup.prefix)
            if not is_folder_placeholder(info.path)
        ]
        keys = await self._unrecorded(route, listed, active)
        for start in range(0, len(keys), self._batch_max):
            job_id = await self._recorder.record(route, keys[start : start + self._batch_max])
            if job_id:
                log.info("scan.found_missed_files", client_id=route.client_id, job_id=job_id)

    async def _unrecorded(
        self, route: Route, listed: list[ObjectInfo], active: list[FileEntry]
    ) -> list[str]:
        """The listed keys not known to be recorded already, without a request per key."""
        # A key in flight is left to its worker (a newer upload of it has its
        # own event, and the next scan after this one settles).
        in_flight = {entry.source_key for entry in active}
        fresh = [info for info in listed if info.path not in in_flight]
        if route.after_delivery == "keep":
            fresh = await self._identities.unknown(route.pickup.bucket, fresh)
        return [info.path for info in fresh]
