"""Operator actions, each recorded with who asked, when and why (``records``).

Plain async functions of an ``ApiContext`` and the ``Caller``: the API's
routes and the web page call the same ones.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from botocore.exceptions import ClientError

from conveyor_api.auth import Caller
from conveyor_api.context import ApiContext
from conveyor_api.models import (
    ActionAccepted,
    ConnectionCheck,
    DeadLetter,
    DeadLetters,
    RedriveRequest,
    RedriveResult,
    ResendByFilter,
    ResendResult,
)
from conveyor_api.problems import ProblemError, conflict, not_found
from conveyor_api.read import DESTINATION_TYPES, FileQuery, iter_files, queue_names
from conveyor_api.records import file_subject, job_subject, new_action_id, record_action
from conveyor_api.resend import resend_entries
from conveyor_shared.aws import CLIENT_CONFIG, aws_session
from conveyor_shared.backends.gcs import GcsDestinationFactory
from conveyor_shared.backends.s3 import S3DestinationFactory
from conveyor_shared.backends.sftp import SftpDestinationFactory
from conveyor_shared.delivery.destinations import DestinationFactory
from conveyor_shared.delivery.failures import fail_exhausted, parse_transfer
from conveyor_shared.delivery.jobs import JobCompletion
from conveyor_shared.errors import ConveyorError, CredentialsRefused, Misconfigured, TransientError
from conveyor_shared.ledger.dynamo import parse_iso
from conveyor_shared.ledger.models import FileEntry, FileStatus
from conveyor_shared.messaging.envelopes import MalformedMessage
from conveyor_shared.messaging.models import ScanRequested
from conveyor_shared.messaging.publisher import CommandSender

log = structlog.get_logger("conveyor.api")


async def _resend(
    ctx: ApiContext,
    caller: Caller,
    kind: str,
    entries: list[FileEntry],
    reason: str | None,
    extra_subjects: list[str] | None = None,
) -> ResendResult:
    action_id = new_action_id()
    jobs, resent, skipped = await resend_entries(ctx, entries, reason)
    result = ResendResult(
        action_id=action_id, matched=len(entries), resent=resent, jobs=jobs, skipped=skipped
    )
    await record_action(
        ctx,
        caller,
        action_id=action_id,
        kind=kind,
        subjects=[file_subject(e.client_id, e.content_id) for e in entries]
        + (extra_subjects or []),
        reason=reason,
        outcome=f"resent {resent} of {len(entries)}" + (f" in {', '.join(jobs)}" if jobs else ""),
    )
    log.info("api.resend", by=caller.key_id, kind=kind, resent=resent, matched=len(entries))
    return result


async def resend_file(
    ctx: ApiContext, caller: Caller, client_id: str, content_id: str, reason: str | None
) -> ResendResult:
    """Send one settled file again (D5); 409 while it is in flight or its upload is gone."""
    entry = await ctx.files.get(client_id, content_id)
    if entry is None:
        raise not_found("file")
    result = await _resend(ctx, caller, "resend.file", [entry], reason)
    if not result.resent:
        raise conflict("; ".join(result.skipped))
    return result


async def resend_job(
    ctx: ApiContext, caller: Caller, job_id: str, reason: str | None
) -> ResendResult:
    """Send every settled file of a job again, as one new job."""
    if await ctx.jobs.get(job_id) is None:
        raise not_found("job")
    entries = [e for e in await ctx.files.files_of_job(job_id) if e.job_id == job_id]
    return await _resend(ctx, caller, "resend.job", entries, reason, [job_subject(job_id)])


def filter_query(body: ResendByFilter, limit: int) -> FileQuery:
    try:
        since = parse_iso(body.since) if body.since else None
        until = parse_iso(body.until) if body.until else None
    except ValueError:
        raise ProblemError(422, "Invalid request", "since and until are ISO 8601 times") from None
    return FileQuery(
        client=body.client,
        status=body.status,
        since=since,
        until=until,
        name=body.name,
        limit=limit,
    )


async def resend_matching(ctx: ApiContext, caller: Caller, body: ResendByFilter) -> ResendResult:
    """Resend every settled file a filter matches; with ``dryRun`` only count them.
    At most ``resend_max_files`` per request (more is a 409: narrow the filter)."""
    most = ctx.settings.resend_max_files
    summaries = [s async for s in iter_files(ctx, filter_query(body, 500), most + 1)]
    if len(summaries) > most:
        raise conflict(f"more than {most} files match: narrow the filter")
    if body.dry_run:
        settled = [s for s in summaries if s.status is not FileStatus.PROCESSING]
        return ResendResult(dry_run=True, matched=len(summaries), resent=len(settled))
    entries = [
        entry
        for s in summaries
        if (entry := await ctx.files.get(s.client_id, s.content_id)) is not None
    ]
    return await _resend(ctx, caller, "resend.filter", entries, body.reason)


async def scan_now(
    ctx: ApiContext, caller: Caller, client_id: str, reason: str | None
) -> ActionAccepted:
    """Ask the scanner to scan now. Its scan takes every pick-up (the client's
    among them) under one lease, so scans never overlap."""
    if (await ctx.routes.get()).route_for_client(client_id) is None:
        raise not_found("client")
    action_id = new_action_id()
    queue = await ctx.aws.queue_url(ctx.names.scanner_queue)
    await CommandSender(ctx.aws.sqs, queue).send(
        ScanRequested(reason=f"{caller.key_id}: {reason or 'scan now'}")
    )
    await record_action(
        ctx,
        caller,
        action_id=action_id,
        kind="scan",
        subjects=[f"client/{client_id}"],
        reason=reason,
        outcome="scan requested",
    )
    return ActionAccepted(action_id=action_id, outcome="scan requested")


# --- dead letters ---------------------------------------------------------------------------


def _known_queue(ctx: ApiContext, queue: str) -> str:
    if queue not in queue_names(ctx):
        raise not_found("queue")
    return queue


async def _urls(ctx: ApiContext, queue: str) -> tuple[str, str]:
    try:
        return (
            await ctx.aws.queue_url(queue),
            await ctx.aws.queue_url(ctx.names.dead_letter_queue(queue)),
        )
    except ClientError:
        raise not_found("queue") from None


def _dead_letter(message: dict[str, Any]) -> DeadLetter:
    attributes = message.get("Attributes", {})
    sent = attributes.get("SentTimestamp")
    kind = None
    try:
        kind = type(parse_transfer(message["Body"])).__name__
    except MalformedMessage:
        kind = None
    return DeadLetter(
        message_id=message["MessageId"],
        kind="transfer.requested" if kind else None,
        receive_count=int(attributes.get("ApproximateReceiveCount", 0)) or None,
        sent_at=datetime.fromtimestamp(int(sent) / 1000, UTC).isoformat() if sent else None,
        body=message["Body"][:1000],
    )


async def list_dead_letters(ctx: ApiContext, queue: str, most: int = 10) -> DeadLetters:
    """A look at up to ``most`` dead letters of ``queue`` (they stay where they are:
    each is received with a zero visibility timeout)."""
    _, dlq_url = await _urls(ctx, _known_queue(ctx, queue))
    depth = await ctx.aws.sqs.get_queue_attributes(
        QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    response = await ctx.aws.sqs.receive_message(
        QueueUrl=dlq_url,
        MaxNumberOfMessages=min(most, 10),
        VisibilityTimeout=0,
        AttributeNames=["All"],
    )
    return DeadLetters(
        queue=queue,
        dead_letter_queue=ctx.names.dead_letter_queue(queue),
        depth=int(depth.get("Attributes", {}).get("ApproximateNumberOfMessages", 0)),
        messages=[_dead_letter(m) for m in response.get("Messages", [])],
    )


async def _redrive_one(
    ctx: ApiContext, body: str, sender: CommandSender, sqs: Any, queue_url: str
) -> tuple[str, FileEntry | None]:
    """Put one dead letter back to work: ``moved``, ``resend`` (with the entry)
    or ``unreadable``. A transfer whose file was failed (by the dead-letter
    consumer, or the attempts were used up) is resent as a new job; moving its
    message back alone would only be skipped."""
    try:
        command = parse_transfer(body)
    except MalformedMessage:
        await sqs.send_message(QueueUrl=queue_url, MessageBody=body)
        return "unreadable", None
    entry = await ctx.files.get(command.client_id, command.content_id)
    if entry is not None and entry.job_id == command.job_id and entry.status is FileStatus.FAIL:
        return "resend", entry
    if (
        entry is not None
        and entry.job_id == command.job_id
        and entry.active
        and entry.send_attempts >= 3
        and not entry.lease_owner
    ):
        return "resend-exhausted", entry
    await sender.send(command)
    return "moved", None


#: How a file fails when its transfer used up its retries (and so dead-lettered).
DEAD_LETTERED_KINDS = frozenset({"transient", "exhausted"})


async def _dead_lettered_files(ctx: ApiContext, queue: str, since_hours: int) -> list[FileEntry]:
    """Files of ``queue``'s destination type that its dead-letter consumer
    failed in the last ``since_hours``: failed after their retries ran out on
    errors that were not permanent (a destination that was down)."""
    kinds = [t for t in DESTINATION_TYPES if ctx.names.transfer_queue(t) == queue]
    if not kinds:
        return []
    since = datetime.now(UTC) - timedelta(hours=since_hours)
    found = []
    for route in (await ctx.routes.get()).routes:
        if route.destination.type not in kinds:
            continue
        query = FileQuery(client=route.client_id, status=FileStatus.FAIL, since=since, limit=500)
        async for summary in iter_files(ctx, query, ctx.settings.resend_max_files):
            entry = await ctx.files.get(summary.client_id, summary.content_id)
            if entry is not None and entry.error_kind in DEAD_LETTERED_KINDS:
                found.append(entry)
    return found


async def redrive(
    ctx: ApiContext, caller: Caller, queue: str, request: RedriveRequest
) -> RedriveResult:
    """Put ``queue``'s dead letters back to work.

    Each message of its dead-letter queue is sent back before it is deleted
    there (a crash in between sends it twice, which the ledger's claim
    absorbs). A transfer queue's dead letters are mostly consumed at once by
    its dead-letter consumer, which fails their files: those files, failed
    in the last ``since_hours`` because their retries ran out, are resent as
    new jobs, as is the file of a transfer message still in the dead-letter
    queue whose file was failed."""
    reason = request.reason
    queue_url, dlq_url = await _urls(ctx, _known_queue(ctx, queue))
    sender = CommandSender(ctx.aws.sqs, queue_url)
    moved = unreadable = 0
    to_resend: list[FileEntry] = []
    exhausted: list[FileEntry] = []
    while True:
        response = await ctx.aws.sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=60, WaitTimeSeconds=0
        )
        messages = response.get("Messages", [])
        if not messages:
            break
        for message in messages:
            outcome, entry = await _redrive_one(
                ctx, message["Body"], sender, ctx.aws.sqs, queue_url
            )
            moved += outcome == "moved"
            unreadable += outcome == "unreadable"
            if entry is not None:
                (exhausted if outcome == "resend-exhausted" else to_resend).append(entry)
            await ctx.aws.sqs.delete_message(
                QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"]
            )
    to_resend += await _fail_exhausted(ctx, exhausted)
    known = {(e.client_id, e.content_id) for e in to_resend}
    to_resend += [
        e
        for e in await _dead_lettered_files(ctx, queue, request.since_hours)
        if (e.client_id, e.content_id) not in known
    ]
    action_id = new_action_id()
    jobs, resent, _ = await resend_entries(ctx, to_resend, reason) if to_resend else ([], 0, [])
    await record_action(
        ctx,
        caller,
        action_id=action_id,
        kind="redrive",
        subjects=[f"queue/{queue}"] + [file_subject(e.client_id, e.content_id) for e in to_resend],
        reason=reason,
        outcome=f"moved {moved}, resent {resent}, unreadable {unreadable}",
    )
    return RedriveResult(
        action_id=action_id, moved=moved, resent=resent, unreadable_moved=unreadable, jobs=jobs
    )


async def _fail_exhausted(ctx: ApiContext, entries: list[FileEntry]) -> list[FileEntry]:
    """Settle files whose attempts are used up as ``fail`` first (what the
    dead-letter consumer would have done), so they can be resent."""
    completion = JobCompletion(ctx.files, ctx.jobs, ctx.publisher)
    failed = []
    for entry in entries:
        if await fail_exhausted(ctx.files, ctx.publisher, completion, entry):
            settled = await ctx.files.get(entry.client_id, entry.content_id)
            if settled is not None and settled.status is FileStatus.FAIL:
                failed.append(settled)
    return failed


# --- connection tests -------------------------------------------------------------------------


def _factory(ctx: ApiContext, kind: str, stack: Any) -> DestinationFactory:
    if kind == "sftp":
        return SftpDestinationFactory(ctx.secrets)
    if kind == "gcs":
        return GcsDestinationFactory(ctx.secrets)
    if kind == "s3":
        return S3DestinationFactory(
            ctx.aws.s3, ctx.secrets, aws_session(ctx.settings.region), stack, CLIENT_CONFIG
        )
    raise ProblemError(409, "Not supported", f"no connection test for {kind} destinations yet")


def _check_of(exc: ConveyorError) -> ConnectionCheck:
    if isinstance(exc, CredentialsRefused):
        hint = "check the secret the route names, and the host key"
        return ConnectionCheck(ok=False, status="refused", message=str(exc), hint=hint)
    if isinstance(exc, Misconfigured):
        hint = "check the route's destination settings and its secret"
        return ConnectionCheck(ok=False, status="misconfigured", message=str(exc), hint=hint)
    if isinstance(exc, TransientError):
        hint = "check that the server is up and reachable from here (host, port, firewall)"
        return ConnectionCheck(ok=False, status="unreachable", message=str(exc), hint=hint)
    return ConnectionCheck(ok=False, status="failed", message=str(exc), hint=None)


async def test_destination(ctx: ApiContext, caller: Caller, client_id: str) -> ConnectionCheck:
    """Open the client's destination as a transfer would (credentials from the
    secret store, host keys checked) and look at its folder."""
    route = (await ctx.routes.get()).route_for_client(client_id)
    if route is None:
        raise not_found("client")
    async with AsyncExitStack() as stack:
        factory = _factory(ctx, route.destination.type, stack)
        stack.push_async_callback(factory.close)
        try:
            await asyncio.wait_for(factory.open(route.destination), 30)
            check = ConnectionCheck(ok=True, status="ok", message="connected and signed in")
        except ConveyorError as exc:
            check = _check_of(exc)
        except TimeoutError:
            check = _check_of(TransientError("no answer within 30 s"))
    await record_action(
        ctx,
        caller,
        action_id=new_action_id(),
        kind="test.destination",
        subjects=[f"client/{client_id}"],
        reason=None,
        outcome=check.status,
    )
    return check
