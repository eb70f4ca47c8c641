"""Finishing jobs and publishing their events exactly once (D8, D12).

Only the caller whose conditional write moved a job to ``finished`` publishes
``job.finished``. If it crashed between that write and the publish, its SQS
message comes back; the redelivered handler finds the job finished but
unpublished and, once the finisher has had ``grace`` seconds, publishes it.
The notifier keeps its own idempotency record, so even a publish repeated in
that window sends no second e-mail.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from conveyor_shared.ledger.dynamo import older_than
from conveyor_shared.ledger.files import FileLedger
from conveyor_shared.ledger.jobs import JobLedger
from conveyor_shared.ledger.models import FileEntry, FileStatus, Job, JobStatus
from conveyor_shared.messaging.models import JobFinished
from conveyor_shared.messaging.publisher import EventPublisher

SUCCESS = FileStatus.SUCCESS

log = structlog.get_logger("conveyor.jobs")


@dataclass
class _Counts:
    """Files of one job settled within one linger, counted with one write."""

    succeeded: int = 0
    failed: int = 0


class JobCompletion:
    def __init__(
        self,
        files: FileLedger,
        jobs: JobLedger,
        publisher: EventPublisher,
        grace_seconds: float = 30.0,
        count_linger_seconds: float = 0.0,
    ) -> None:
        self._files = files
        self._jobs = jobs
        self._publisher = publisher
        self._grace = grace_seconds
        self._linger = count_linger_seconds
        self._pending: dict[str, _Counts] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._flushes: set[asyncio.Task[None]] = set()

    async def count(self, entry: FileEntry) -> None:
        """Count ``entry``, just settled by the caller, in its job, and finish the
        job if that made it complete. Only the caller whose settle succeeded
        counts, so no file is counted twice.

        With ``count_linger_seconds``, the files of one job settled within it
        are counted with one write, sent after the callers returned (``close``
        sends what a stop leaves pending). A count lost with a crash leaves the
        job short: the health check finishes it from its files (``recount``)."""
        if self._linger <= 0:
            ok = entry.status is SUCCESS
            job = await self._jobs.count(entry.job_id, succeeded=int(ok), failed=int(not ok))
            if job is not None:
                await self.finish_if_complete(job)
            return
        counts = self._pending.get(entry.job_id)
        if counts is None:
            counts = self._pending[entry.job_id] = _Counts()
            self._timers[entry.job_id] = asyncio.get_running_loop().call_later(
                self._linger, self._flush, entry.job_id
            )
        if entry.status is SUCCESS:
            counts.succeeded += 1
        else:
            counts.failed += 1

    def _flush(self, job_id: str) -> None:
        self._timers.pop(job_id, None)
        counts = self._pending.pop(job_id)
        task = asyncio.ensure_future(self._send(job_id, counts))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _send(self, job_id: str, counts: _Counts) -> None:
        try:
            job = await self._jobs.count(job_id, succeeded=counts.succeeded, failed=counts.failed)
            if job is not None:
                await self.finish_if_complete(job)
        except Exception as exc:
            log.error(
                "job.count_failed",
                job_id=job_id,
                error=str(exc),
                reason="the health check finishes the job from its files",
            )

    async def close(self) -> None:
        """Send the counts pending now and wait for every count sent."""
        for job_id in list(self._pending):
            if timer := self._timers.get(job_id):
                timer.cancel()
            self._flush(job_id)
        await asyncio.gather(*self._flushes, return_exceptions=True)

    async def settle_job(self, job_id: str) -> None:
        """Finish the job if all its files are counted, and see ``job.finished`` out."""
        job = await self._jobs.get(job_id)
        if job is not None:
            await self.finish_if_complete(job)

    async def recount(self, job: Job) -> bool:
        """Finish a ``running`` job whose files are all settled, by its files, not
        its counters (a worker died between a settle and its count). True if
        every file was settled."""
        files = await self._files.files_of_job(job.job_id)
        if job.status is not JobStatus.RUNNING or len(files) < job.total:
            return False
        if any(not f.settled for f in files):
            return False
        log.warning(
            "job.recounted",
            job_id=job.job_id,
            counted=job.settled_files,
            settled=len(files),
            reason="a settled file was not counted (its worker stopped in between)",
        )
        finished = await self._jobs.finish(job.job_id)
        if finished is not None:
            await self._publish_finished(finished)
        return True

    async def finish_if_complete(self, job: Job) -> None:
        """Finish ``job`` (as just read or written) if complete; see its
        ``job.finished`` out if its finisher stopped before publishing."""
        job_id = job.job_id
        if job.status is JobStatus.RUNNING and job.complete:
            finished = await self._jobs.finish(job_id)
            if finished is not None:
                await self._publish_finished(finished)
        elif (
            job.status is JobStatus.FINISHED
            and job.finished_published_at is None
            and older_than(job.finished_at, self._grace)
        ):
            log.warning("job.finished_republished", job_id=job_id, reason="finisher stopped early")
            await self._publish_finished(job)

    async def _publish_finished(self, job: Job) -> None:
        files = await self._files.files_of_job(job.job_id)
        succeeded, failed = job.succeeded, job.failed
        if len(files) >= job.total:  # the files themselves, should a count be missing
            succeeded = sum(f.status is FileStatus.SUCCESS for f in files)
            failed = sum(f.status is FileStatus.FAIL for f in files)
        log.info(
            "job.finished",
            job_id=job.job_id,
            client_id=job.client_id,
            started_at=job.started_at,
            finished_at=job.finished_at,
            succeeded=succeeded,
            failed=failed,
            files=[
                {"file": f.file_name, "status": f.status.value, "attempts": f.send_attempts}
                for f in files
            ],
        )
        await self._publisher.publish(
            JobFinished(
                job_id=job.job_id,
                client_id=job.client_id,
                route_name=job.route_name,
                succeeded=succeeded,
                failed=failed,
            )
        )
        await self._jobs.mark_published(job.job_id, "finished")
