"""Provider sources: their health, checking and testing one's server,
polling one now, and a plan of what the next poll would copy.

Sources are the routes file's ``sources`` (by ``id``); any other id is a 404
``no such source``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from conveyor_api import sources
from conveyor_api.auth import Caller, Operator, Reader
from conveyor_api.context import ApiContext, Context
from conveyor_api.idempotent import IdempotencyKey, idempotent
from conveyor_api.models import (
    ActionAccepted,
    ConnectionCheck,
    SourceCheck,
    SourceHealth,
    SourcePlan,
    SourceRequest,
)
from conveyor_api.problems import COMMON_PROBLEMS, NOT_FOUND

router = APIRouter(tags=["sources"], responses=COMMON_PROBLEMS)


async def _with_reason(
    ctx: ApiContext,
    who: Caller,
    request: Request,
    key: str | None,
    body: SourceRequest | None,
    action: Callable[[str | None], Awaitable[BaseModel]],
) -> Response:
    """Run an action with the body's reason, once per ``Idempotency-Key``."""
    reason = body.reason if body else None
    return await idempotent(ctx, who, request, key, body, lambda: action(reason))


@router.get("/sources", response_model=list[SourceHealth], summary="Every source's health")
async def get_sources(ctx: Context, _who: Reader) -> list[SourceHealth]:
    return await sources.source_health(ctx)


@router.get(
    "/sources/{source_id}",
    response_model=SourceHealth,
    responses=NOT_FOUND,
    summary="One source's health",
)
async def get_source(ctx: Context, _who: Reader, source_id: str) -> SourceHealth:
    return (await sources.source_health(ctx, source_id))[0]


@router.post(
    "/sources/{source_id}/check",
    response_model=SourceCheck,
    responses=NOT_FOUND,
    summary="Connect, sign in and list one source's server",
)
async def post_check(
    ctx: Context,
    who: Operator,
    request: Request,
    source_id: str,
    body: SourceRequest | None = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """What the listing showed, or the step it failed at (``failedAt``): dns,
    refused, timeout, tls, host_key, login, permission, directory, listing.
    Nothing is copied or recorded but the action."""
    return await _with_reason(
        ctx, who, request, idempotency_key, body, lambda r: sources.check(ctx, who, source_id, r)
    )


@router.post(
    "/sources/{source_id}/test",
    response_model=ConnectionCheck,
    responses=NOT_FOUND,
    summary="Test one source's connection",
)
async def post_test(
    ctx: Context,
    who: Operator,
    request: Request,
    source_id: str,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """The check as ``{ok, status, message, hint}``, like a destination's test."""
    return await idempotent(
        ctx, who, request, idempotency_key, None, lambda: sources.test(ctx, who, source_id)
    )


@router.post(
    "/sources/{source_id}/poll",
    response_model=ActionAccepted,
    responses=NOT_FOUND,
    summary="Poll one source now",
)
async def post_poll(
    ctx: Context,
    who: Operator,
    request: Request,
    source_id: str,
    body: SourceRequest | None = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Asks provider sync for a poll of the source now, due or not."""
    return await _with_reason(
        ctx, who, request, idempotency_key, body, lambda r: sources.poll_now(ctx, who, source_id, r)
    )


@router.get(
    "/plan",
    response_model=list[SourcePlan],
    responses=NOT_FOUND,
    summary="What the next poll would copy, skip and why",
)
async def get_plan(
    ctx: Context,
    _who: Operator,
    source: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
) -> list[SourcePlan]:
    """Lists each source's server (or ``source``'s) and compares it with the
    ledger; changes nothing. Operate role: it connects to partners' servers."""
    return await sources.plans(ctx, source)
