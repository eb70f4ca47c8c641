"""Provider sources in the read model and their actions (S1, S5, B3, B4):
each source's health from what provider sync records, checking and testing
its server, planning its next poll, and asking for a poll now.

Health reads, per source: the poll lease item (``sync-poll#<id>`` in the
locks table), whose ``polledAt`` provider sync sets only when a poll listed
the server and recorded what it saw; the source's path states (one paged
``Query`` of its partition in the received table); and the fetch
dead-letter queue's depth. Actions are recorded like the others (who, when,
why, outcome)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from conveyor_api.auth import Caller
from conveyor_api.context import ApiContext
from conveyor_api.models import (
    ActionAccepted,
    ConnectionCheck,
    PlannedFile,
    SourceCheck,
    SourceHealth,
    SourcePlan,
)
from conveyor_api.problems import not_found
from conveyor_api.read import queue_depth
from conveyor_api.records import new_action_id, record_action
from conveyor_shared.config.sources import ProviderSource
from conveyor_shared.errors import ConveyorError
from conveyor_shared.ledger.dynamo import from_item, parse_iso, to_item
from conveyor_shared.ledger.received import PathState, PathStatus
from conveyor_shared.messaging.publisher import CommandSender
from conveyor_shared.sync.check import CheckReport, check_source, plan
from conveyor_shared.sync.messages import PollRequested

#: A copy asked for this long ago and not recorded has failed: a fetch is
#: received three times, two minutes apart, before it is dead-lettered.
OVERDUE_AFTER = timedelta(minutes=15)
DAY = timedelta(hours=24)


async def known_source(ctx: ApiContext, source_id: str) -> ProviderSource:
    """The routes file's source ``source_id``; 404 ``no such source``."""
    found = next((s for s in (await ctx.routes.get()).sources if s.id == source_id), None)
    if found is None:
        raise not_found("source")
    return found


def source_subject(source_id: str) -> str:
    return f"source/{source_id}"


async def _last_good_poll(ctx: ApiContext, source_id: str) -> str | None:
    response = await ctx.db.get_item(
        TableName=ctx.names.locks_table, Key=to_item({"name": f"sync-poll#{source_id}"})
    )
    polled = from_item(response.get("Item") or {}).get("polledAt")
    return str(polled) if polled else None


def _unprocessed(state: PathState) -> bool:
    """Seen on the server, and its latest look not copied (or seen) yet."""
    return state.status is PathStatus.PRESENT and (
        state.stored_first_seen is None or state.stored_first_seen < state.looked_at
    )


def _age(since: str, now: datetime) -> float:
    return (now - parse_iso(since)).total_seconds()


async def _health(
    ctx: ApiContext, source: ProviderSource, dead_letters: int | None
) -> SourceHealth:
    now = datetime.now(UTC)
    waiting = [s async for s in ctx.received.states(source.id) if _unprocessed(s)]
    failing = [
        s
        for s in waiting
        if s.fetch_requested_at is not None
        and OVERDUE_AFTER < now - parse_iso(s.fetch_requested_at) <= DAY
    ]
    return SourceHealth(
        source_id=source.id,
        name=source.name,
        protocol=source.protocol,
        audience=source.audience,
        last_good_poll_at=await _last_good_poll(ctx, source.id),
        oldest_unprocessed_seconds=max((_age(s.looked_at, now) for s in waiting), default=None),
        failed_last_24h=len(failing),
        dead_letters=dead_letters,
    )


async def source_health(ctx: ApiContext, source_id: str | None = None) -> list[SourceHealth]:
    """Every source's health (or one's): last good poll, the age of the oldest
    file not copied yet, copies failing in the last 24 hours, and the fetch
    dead-letter queue's depth."""
    sources = (await ctx.routes.get()).sources
    if source_id is not None:
        sources = [await known_source(ctx, source_id)]
    depth = await queue_depth(ctx, ctx.names.sync_fetch_queue) if sources else None
    dead = depth.dead_letters if depth else None
    return [await _health(ctx, source, dead) for source in sources]


# --- actions --------------------------------------------------------------------------------


async def _record(
    ctx: ApiContext, caller: Caller, kind: str, source_id: str, reason: str | None, outcome: str
) -> str:
    action_id = new_action_id()
    await record_action(
        ctx,
        caller,
        action_id=action_id,
        kind=kind,
        subjects=[source_subject(source_id)],
        reason=reason,
        outcome=outcome,
    )
    return action_id


def _outcome(report: CheckReport) -> str:
    if report.ok:
        return f"ok: {report.files} file(s) listed"
    return f"failed at {report.failed_at}: {report.reason}"


async def check(ctx: ApiContext, caller: Caller, source_id: str, reason: str | None) -> SourceCheck:
    """Resolve, connect, log in and list the source's server (nothing is
    copied or written): what was found, or exactly where it failed."""
    source = await known_source(ctx, source_id)
    report = await check_source(source, ctx.sources)
    action_id = await _record(ctx, caller, "source.check", source_id, reason, _outcome(report))
    return SourceCheck.model_validate({**report.model_dump(), "action_id": action_id})


#: What to look at when a check failed at each step.
HINTS = {
    "dns": "check the source's host name",
    "refused": "check the host and port, and that the server is up",
    "timeout": "check that the server is reachable from here (firewall, allow-list)",
    "tls": "check the source's certificate pin or the secret's ca_bundle",
    "host_key": "check the source's host_keys against the server's key",
    "login": "check the source's username and the secret it names",
    "permission": "ask the partner to grant the account access to the directory",
    "directory": "check the source's directory",
    "listing": "look at the server's reply in the reason",
}


async def test(ctx: ApiContext, caller: Caller, source_id: str) -> ConnectionCheck:
    """The check as a connection test: status, message and hint, like a
    destination's test."""
    result = await check(ctx, caller, source_id, None)
    if result.ok:
        message = f"connected, signed in and listed {result.files} file(s)"
        return ConnectionCheck(ok=True, status="ok", message=result.note or message)
    stage = result.failed_at or "listing"
    return ConnectionCheck(
        ok=False, status=stage, message=result.reason or stage, hint=HINTS.get(stage)
    )


async def poll_now(
    ctx: ApiContext, caller: Caller, source_id: str, reason: str | None
) -> ActionAccepted:
    """Ask provider sync to poll the source now, due or not. Its poll takes
    the source's lease, so it never overlaps a poll already running."""
    await known_source(ctx, source_id)
    queue = await ctx.aws.queue_url(ctx.names.sync_poll_queue)
    await CommandSender(ctx.aws.sqs, queue).send(
        PollRequested(
            source_id=source_id, force=True, reason=f"{caller.key_id}: {reason or 'poll now'}"
        )
    )
    action_id = await _record(ctx, caller, "source.poll", source_id, reason, "poll requested")
    return ActionAccepted(action_id=action_id, outcome="poll requested")


#: How long a plan waits for one source's listing.
PLAN_SECONDS = 60


async def _plan_of(ctx: ApiContext, source: ProviderSource) -> SourcePlan:
    try:
        async with asyncio.timeout(PLAN_SECONDS):
            (found,) = await plan([source], ctx.received, ctx.sources)
    except (ConveyorError, TimeoutError) as exc:
        reason = str(exc) or f"no listing within {PLAN_SECONDS} s"
        return SourcePlan(source_id=source.id, listed=0, files=[], gone=[], error=reason)
    return SourcePlan(
        source_id=found.source_id,
        listed=found.listed,
        files=[PlannedFile.model_validate(f.model_dump(mode="json")) for f in found.files],
        gone=found.gone,
    )


async def plans(ctx: ApiContext, source_id: str | None = None) -> list[SourcePlan]:
    """What the next poll of each source (or of one) would copy, skip and
    why; a source whose server cannot be listed says why instead. Lists the
    servers; writes and sends nothing."""
    if source_id is not None:
        sources = [await known_source(ctx, source_id)]
    else:
        sources = (await ctx.routes.get()).sources
    return list(await asyncio.gather(*(_plan_of(ctx, s) for s in sources)))
