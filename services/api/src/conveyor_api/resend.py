"""Resending delivered or failed files (D5), one, a job's, or by filter.

A resend goes through the ledger's own state machine: a new job is created
(``forming``), each settled entry is moved back to ``processing`` in it with
``reset_for_resend`` (conditional on the entry being settled, so a resend
never races a live transfer and two resends of one file make one), the job
is started with its final count, and one ``transfer.requested`` per file goes
to the route's transfer queue, exactly as the scanner dispatches. A crash
part-way leaves an active entry of a ``forming`` or undispatched job, which
the scanner's health check repairs like any other. The earlier attempts stay
in the entry's history.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

import structlog

from conveyor_api.context import ApiContext
from conveyor_shared.backends.s3 import S3Store
from conveyor_shared.config.models import Route
from conveyor_shared.errors import NotFound
from conveyor_shared.ledger.dynamo import now_iso
from conveyor_shared.ledger.models import FileEntry, FileStatus, Job, JobStatus
from conveyor_shared.messaging.models import JobStarted
from conveyor_shared.messaging.publisher import CommandSender

log = structlog.get_logger("conveyor.api")


def resend_job_id(client_id: str) -> str:
    """Readable, sortable, and says what made it: ``H1234-20261121T101500Z-resend-3f9a1c``."""
    return f"{client_id}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-resend-{secrets.token_hex(3)}"


def fresh_entry(entry: FileEntry, job_id: str) -> FileEntry:
    """``entry`` as a new file of ``job_id``: ``processing``, active, no attempts
    counted (D5). Its history (``attempts``) is kept by the reset."""
    now = now_iso()
    return FileEntry(
        client_id=entry.client_id,
        content_id=entry.content_id,
        timestamp=now,
        status=FileStatus.PROCESSING,
        file_path=entry.file_path,
        file_name=entry.file_name,
        send_attempts=0,
        active=True,
        job_id=job_id,
        route_name=entry.route_name,
        size=entry.size,
        source_bucket=entry.source_bucket,
        source_key=entry.source_key,
        source_version=entry.source_version,
        source_etag=entry.source_etag,
        active_since=now,
    )


async def _why_not(ctx: ApiContext, entry: FileEntry) -> str | None:
    """Why ``entry`` cannot be resent now, or None if it can."""
    if not entry.settled:
        return f"{entry.file_name}: still {entry.status.value} (in flight)"
    try:
        await S3Store(ctx.aws.s3, entry.source_bucket).head(entry.source_key, entry.source_version)
    except NotFound:
        return f"{entry.file_name}: its upload is no longer in the pick-up ({entry.file_path})"
    return None


async def _dispatch(ctx: ApiContext, route: Route, job: Job, entries: Sequence[FileEntry]) -> None:
    # The batch takes no other file and its total is final before anything is sent,
    # so the job cannot look finished early.
    await ctx.jobs.close(job.job_id, len(entries))
    started = await ctx.jobs.start(job.job_id, len(entries))
    queue = await ctx.aws.queue_url(ctx.names.transfer_queue(route.destination.type))
    await CommandSender(ctx.aws.sqs, queue).send_many([e.transfer_request() for e in entries])
    # Marked sent, so the scanner's repair does not send them again.
    await ctx.jobs.recorded(job.job_id, dispatched=len(entries), given_back=0)
    await ctx.publisher.publish(
        JobStarted(
            job_id=job.job_id,
            client_id=job.client_id,
            route_name=job.route_name,
            files=len(entries),
        )
    )
    if started is not None:
        await ctx.jobs.mark_published(job.job_id, "started")


async def resend_client_files(
    ctx: ApiContext, route: Route, entries: Sequence[FileEntry], reason: str | None
) -> tuple[str | None, list[str]]:
    """Resend settled ``entries`` of ``route``'s client as one new job.

    Returns the job id (None if nothing was resent) and why each other entry
    was left alone."""
    skipped: list[str] = []
    ready = []
    for entry in entries:
        why = await _why_not(ctx, entry)
        if why is None:
            ready.append(entry)
        else:
            skipped.append(why)
    if not ready:
        return None, skipped
    job = Job(
        job_id=resend_job_id(route.client_id),
        client_id=route.client_id,
        route_name=route.name,
        status=JobStatus.FORMING,
        started_at=now_iso(),
    )
    await ctx.jobs.create(job)
    reset = []
    for entry in ready:
        fresh = fresh_entry(entry, job.job_id)
        if await ctx.files.reset_for_resend(fresh, unless_version=None):
            reset.append(fresh)
            log.info(
                "file.resent",
                client_id=entry.client_id,
                job_id=job.job_id,
                file=entry.file_name,
                previous_status=entry.status.value,
                previous_job=entry.job_id,
                reason=reason,
            )
        else:
            skipped.append(f"{entry.file_name}: it went back in flight meanwhile")
    if not reset:
        await ctx.jobs.discard(job.job_id)
        return None, skipped
    await _dispatch(ctx, route, job, reset)
    return job.job_id, skipped


async def resend_entries(
    ctx: ApiContext, entries: Sequence[FileEntry], reason: str | None
) -> tuple[list[str], int, list[str]]:
    """Resend ``entries``, one new job per client: (job ids, files resent, skipped)."""
    routes = await ctx.routes.get()
    by_client: dict[str, list[FileEntry]] = defaultdict(list)
    for entry in entries:
        by_client[entry.client_id].append(entry)
    jobs: list[str] = []
    skipped: list[str] = []
    resent = 0
    for client_id, group in by_client.items():
        route = routes.route_for_client(client_id)
        if route is None:
            skipped += [f"{e.file_name}: client {client_id} has no route" for e in group]
            continue
        job_id, left = await resend_client_files(ctx, route, group, reason)
        skipped += left
        if job_id is not None:
            jobs.append(job_id)
            resent += len(group) - len(left)
    return jobs, resent, skipped
