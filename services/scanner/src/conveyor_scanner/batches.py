"""Which job an arriving file joins, and when a job's batch closes (D8).

Every file is dispatched the moment it is recorded; the job only groups the
files of a burst for the "job started" and "job finished" e-mails. A
client's open batch lives in DynamoDB (``ledger/batches.py``), so any number
of scanner replicas put one burst in one job. Closing is driven by a
``batch.due`` message the opener sends itself, delayed by the quiet period:
the handler closes the batch once its rules say so (otherwise it looks again
when they might), waits until every file reserved in it is recorded, sends
the start mail and fixes the job's total. A scanner that dies anywhere in
between leaves the message to come back, or the health check (``scan.py``)
to send it again; each step is conditional, so repeating one changes nothing.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import structlog

from conveyor_shared.config.models import Route
from conveyor_shared.delivery.jobs import JobCompletion
from conveyor_shared.errors import TransientError
from conveyor_shared.ledger.batches import BatchRules, OpenBatches, now_ms
from conveyor_shared.ledger.claims import new_owner
from conveyor_shared.ledger.dynamo import now_iso, older_than
from conveyor_shared.ledger.files import FileLedger
from conveyor_shared.ledger.jobs import JobLedger
from conveyor_shared.ledger.models import FileEntry, Job, JobStatus
from conveyor_shared.messaging.models import BatchDue, JobStarted
from conveyor_shared.messaging.publisher import CommandSender, EventPublisher

log = structlog.get_logger("conveyor.scanner")

#: How long one scanner has a job's closing to itself (renewed by its retries).
_TURN_SECONDS = 60

#: Records files into the job it is given; the entries it recorded.
RecordInto = Callable[[str], Awaitable[Sequence[FileEntry]]]


class _NotYet(Exception):
    """A batch to look at again in ``seconds``."""

    def __init__(
        self, seconds: int, reason: str, marked: int | None = None, at_ms: int | None = None
    ) -> None:
        super().__init__(reason)
        self.seconds, self.reason = seconds, reason
        self.looked = {} if marked is None else {"marked": marked, "marked_at_ms": at_ms}


def new_job_id(client_id: str) -> str:
    """Readable and sortable: ``H1234-20261121T101500Z-3f9a1c``."""
    return f"{client_id}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def new_job(route: Route, *, batched: bool) -> Job:
    return Job(
        job_id=new_job_id(route.client_id),
        client_id=route.client_id,
        route_name=route.name,
        status=JobStatus.FORMING,
        started_at=now_iso(),
        batched=batched,
    )


class JobBatches:
    def __init__(
        self,
        *,
        batches: OpenBatches,
        jobs: JobLedger,
        files: FileLedger,
        completion: JobCompletion,
        publisher: EventPublisher,
        due: CommandSender,
        rules: BatchRules,
        record_grace_seconds: float = 30.0,
        repair_grace_seconds: float = 120.0,
    ) -> None:
        self._batches = batches
        self._jobs = jobs
        self._files = files
        self._completion = completion
        self._publisher = publisher
        self._due = due
        self._rules = rules
        #: How long a closed batch waits for files reserved in it to be recorded
        #: before it starts with those that were (their recorder stopped).
        self._grace = record_grace_seconds
        #: How long a job of its own may stay unclosed before its recorder is
        #: taken to have stopped.
        self._repair_grace = repair_grace_seconds

    def wait_limit_seconds(self, job: Job) -> float:
        """How old a ``forming`` job may be before it must have closed: a batch
        after its longest wait, a job of its own (closed by its recorder) at
        once, each with ``record_grace_seconds`` for a recorder still at work."""
        if not job.batched:
            return self._repair_grace
        return max(self._rules.max_wait_seconds, self._rules.quiet_seconds) + self._grace

    async def join(self, route: Route, files: int) -> str:
        """Reserve ``files`` arriving now in the client's open batch, opening one
        if none takes them; the job they belong to."""
        for _ in range(8):
            batch = await self._batches.reserve(route.client_id, files, self._rules)
            if batch is not None:
                return batch.job_id
            job = new_job(route, batched=True)
            await self._jobs.create(job)
            opened, replaced = await self._batches.open(
                route.client_id, job.job_id, files, self._rules
            )
            if not opened:  # another replica opened one first: join it
                await self._jobs.discard(job.job_id)
                continue
            log.info("batch.opened", client_id=route.client_id, job_id=job.job_id)
            await self._due.send(
                BatchDue(client_id=route.client_id, job_id=job.job_id),
                delay_seconds=min(900, math.ceil(self._rules.quiet_seconds)),
            )
            if replaced is not None and not replaced.closed:
                # Nobody had closed it yet: its count is final now that it is replaced.
                await self._jobs.close(replaced.job_id, replaced.files)
                await self._due.send(BatchDue(client_id=route.client_id, job_id=replaced.job_id))
            return job.job_id
        raise TransientError(f"could not join or open a batch for {route.client_id}")

    async def due(self, message: BatchDue) -> None:
        """Close the batch of ``message.job_id`` if its time has come, then start it.
        What is not due yet is looked at again by a new, delayed message (not by
        keeping this one, whose receives are limited)."""
        job = await self._jobs.get(message.job_id)
        if job is None or job.status is not JobStatus.FORMING:
            return
        # Of two messages for one job, the one holding the turn does the work;
        # the message it sends on carries the turn.
        turn = message.turn or new_owner()
        if not await self._jobs.take_turn(job.job_id, turn, _TURN_SECONDS):
            log.info("batch.due_skipped", job_id=job.job_id, reason="another scanner has it")
            return
        try:
            if job.reserved is None:
                job = await self._close(message, job)
            await self._start(job, looked=message)
        except _NotYet as wait:
            log.info("batch.not_yet", job_id=job.job_id, reason=wait.reason, seconds=wait.seconds)
            await self._due.send(
                message.model_copy(update={"turn": turn, **wait.looked}),
                delay_seconds=wait.seconds,
            )

    async def _close(self, message: BatchDue, job: Job) -> Job:
        batch = await self._batches.get(message.client_id)
        if batch is not None and batch.job_id == job.job_id and not batch.closed:
            left_ms = self._rules.open_until_ms(batch.opened_ms, batch.last_ms) - now_ms()
            if left_ms > 0:
                raise _NotYet(math.ceil(left_ms / 1000), "the batch still takes files")
            batch = await self._batches.close(message.client_id, job.job_id)
        if batch is not None and batch.job_id == job.job_id:
            return await self._jobs.close(job.job_id, batch.files) or job
        # Replaced by a newer batch, whose opener records this one's count.
        if not older_than(job.started_at, self.wait_limit_seconds(job)):
            raise _NotYet(1, "the batch was replaced; its count is on its way")
        recorded = len(await self._files.files_of_job(job.job_id))
        log.warning(
            "batch.count_lost",
            job_id=job.job_id,
            recorded=recorded,
            reason="the scanner that closed or replaced its batch stopped before counting it",
        )
        return await self._jobs.close(job.job_id, recorded) or job

    async def _start(
        self, job: Job, total: int | None = None, looked: BatchDue | None = None
    ) -> None:
        """Send the start mail and fix the job's total, once its files are all
        recorded (``total``, when the caller recorded them itself). The caller
        holds the job's turn, so the mail goes out once."""
        if total is None:
            self._all_recorded(job, looked)
        files = await self._files.files_of_job(job.job_id)
        total = len(files) if total is None else total
        if total == 0:
            await self._jobs.discard(job.job_id)
            return
        if job.started_published_at is None:
            await self._announce(job, total, files)
        started = await self._jobs.start(job.job_id, total)
        if started is not None:
            await self._completion.finish_if_complete(started)

    def _all_recorded(self, job: Job, looked: BatchDue | None) -> None:
        """Raise ``_NotYet`` while files reserved in ``job`` are still being
        recorded: until every one is marked, or no mark came for the grace
        period (their recorder stopped; the files recorded are the job)."""
        reserved, marked = job.reserved or 0, job.dispatched + job.given_back
        if marked >= reserved:
            return
        now = now_ms()
        if looked is None or looked.marked != marked:
            raise _NotYet(1, f"{marked} of {reserved} files recorded", marked, now)
        if now - looked.marked_at_ms < self._grace * 1000:
            raise _NotYet(1, f"{marked} of {reserved} files recorded", marked, looked.marked_at_ms)
        log.warning(
            "batch.recording_stopped",
            job_id=job.job_id,
            reserved=reserved,
            marked=marked,
            reason=f"no file of the job was recorded for {self._grace} s",
        )

    async def _announce(self, job: Job, total: int, files: Sequence[FileEntry]) -> None:
        # D12: the start of every job, with its files as they are now (some
        # may be delivered already: files go on arrival, the job groups them).
        log.info(
            "job.started",
            job_id=job.job_id,
            client_id=job.client_id,
            started_at=job.started_at,
            total=total,
            files=[{"file": f.file_name, "status": f.status.value} for f in files],
        )
        await self._publisher.publish(
            JobStarted(
                job_id=job.job_id,
                client_id=job.client_id,
                route_name=job.route_name,
                files=total,
            )
        )
        await self._jobs.mark_published(job.job_id, "started")

    def lost_sends(self, job: Job) -> bool:
        """Whether a recorder of ``job`` stopped before marking what it sent: it
        reserved more than it marked sent or given back, or its own job was
        never closed."""
        if job.reserved is None:
            return job.status is JobStatus.FORMING and older_than(
                job.started_at, self.wait_limit_seconds(job)
            )
        return job.dispatched + job.given_back < job.reserved

    async def look_again(self, job: Job) -> None:
        """Have a ``forming`` job's batch looked at, if it should have started by
        now (its ``batch.due`` message was lost with a scanner)."""
        if older_than(job.started_at, self.wait_limit_seconds(job)):
            await self._due.send(BatchDue(client_id=job.client_id, job_id=job.job_id))

    async def own_job(self, route: Route, record: RecordInto) -> str | None:
        """A job of its own for files found together (a ``.done`` file's batch,
        a scan's finds), closed at once: ``record`` records them into it."""
        job = new_job(route, batched=False)
        await self._jobs.create(job)
        entries = await record(job.job_id)
        if not entries:
            await self._jobs.discard(job.job_id)
            return None
        closed = await self._jobs.close(job.job_id, len(entries)) or job
        if await self._jobs.take_turn(job.job_id, new_owner(), _TURN_SECONDS):
            await self._start(closed, total=len(entries))
        return job.job_id
