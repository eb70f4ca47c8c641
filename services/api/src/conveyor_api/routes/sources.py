"""Provider sources (polled by provider sync): checking and testing one.

Sources are the routes file's ``sources`` (by ``id``); any other id is a 404
``no such source``. Polling and testing are provider sync's: until the API
can reach it, a known source answers 409 ``not available``."""

from __future__ import annotations

from fastapi import APIRouter

from conveyor_api.auth import Operator
from conveyor_api.context import Context
from conveyor_api.models import ConnectionCheck
from conveyor_api.problems import COMMON_PROBLEMS, CONFLICT, NOT_FOUND, ProblemError, not_found
from conveyor_shared.config.sources import ProviderSource

router = APIRouter(prefix="/sources", tags=["sources"], responses=COMMON_PROBLEMS)


async def _source(ctx: Context, source_id: str) -> ProviderSource:
    sources = (await ctx.routes.get()).sources
    found = next((s for s in sources if s.id == source_id), None)
    if found is None:
        raise not_found("source")
    return found


async def _unavailable(ctx: Context, source_id: str) -> ConnectionCheck:
    await _source(ctx, source_id)
    raise ProblemError(409, "Not available", "provider sync is not running in this deployment")


_SOURCE_RESPONSES = {**NOT_FOUND, **CONFLICT}


@router.post(
    "/{source_id}/check",
    response_model=ConnectionCheck,
    responses=_SOURCE_RESPONSES,
    summary="Poll one source now",
)
async def post_check(ctx: Context, _who: Operator, source_id: str) -> ConnectionCheck:
    return await _unavailable(ctx, source_id)


@router.post(
    "/{source_id}/test",
    response_model=ConnectionCheck,
    responses=_SOURCE_RESPONSES,
    summary="Test one source's connection",
)
async def post_test(ctx: Context, _who: Operator, source_id: str) -> ConnectionCheck:
    return await _unavailable(ctx, source_id)
