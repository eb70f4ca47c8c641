"""Queues: depths, dead letters, redrive."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor_api.actions import list_dead_letters, redrive
from conveyor_api.auth import Operator, Reader
from conveyor_api.context import Context
from conveyor_api.idempotent import IdempotencyKey, idempotent
from conveyor_api.models import DeadLetters, QueueDepth, RedriveRequest, RedriveResult
from conveyor_api.problems import COMMON_PROBLEMS, NOT_FOUND
from conveyor_api.read import queue_depths

router = APIRouter(prefix="/queues", tags=["queues"], responses=COMMON_PROBLEMS)


@router.get("", response_model=list[QueueDepth], summary="Every queue and its dead letters")
async def get_queues(ctx: Context, _who: Reader) -> list[QueueDepth]:
    return await queue_depths(ctx)


@router.get(
    "/{queue}/dead-letters",
    response_model=DeadLetters,
    responses=NOT_FOUND,
    summary="A look at a queue's dead letters (they stay)",
)
async def get_dead_letters(ctx: Context, _who: Reader, queue: str) -> DeadLetters:
    return await list_dead_letters(ctx, queue)


@router.post(
    "/{queue}/redrive",
    response_model=RedriveResult,
    responses=NOT_FOUND,
    summary="Put a queue's dead letters back to work",
)
async def post_redrive(
    ctx: Context,
    who: Operator,
    request: Request,
    queue: str,
    body: RedriveRequest,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Each message goes back to the queue; for a transfer queue, the files its
    dead-letter consumer failed (retries used up, ``sinceHours`` back) are
    resent as new jobs."""
    return await idempotent(
        ctx, who, request, idempotency_key, body, lambda: redrive(ctx, who, queue, body)
    )
