"""Routes (one per client) and their health, scanning now, testing a destination."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor_api.actions import scan_now, test_destination
from conveyor_api.auth import Operator, Reader
from conveyor_api.context import Context
from conveyor_api.idempotent import IdempotencyKey, idempotent
from conveyor_api.models import ActionAccepted, ConnectionCheck, RouteHealth, ScanRequest
from conveyor_api.problems import COMMON_PROBLEMS, CONFLICT, NOT_FOUND, not_found
from conveyor_api.read import route_health

router = APIRouter(prefix="/clients", tags=["clients"], responses=COMMON_PROBLEMS)


@router.get("", response_model=list[RouteHealth], summary="Every route's health")
async def get_clients(ctx: Context, _who: Reader) -> list[RouteHealth]:
    return await route_health(ctx)


@router.get(
    "/{client_id}", response_model=RouteHealth, responses=NOT_FOUND, summary="One route's health"
)
async def get_client(ctx: Context, _who: Reader, client_id: str) -> RouteHealth:
    found = [h for h in await route_health(ctx) if h.client_id == client_id]
    if not found:
        raise not_found("client")
    return found[0]


@router.post(
    "/{client_id}/scan",
    response_model=ActionAccepted,
    responses=NOT_FOUND,
    summary="Scan the pick-up now",
)
async def post_scan(
    ctx: Context,
    who: Operator,
    request: Request,
    client_id: str,
    body: ScanRequest,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return await idempotent(
        ctx, who, request, idempotency_key, body, lambda: scan_now(ctx, who, client_id, body.reason)
    )


@router.post(
    "/{client_id}/destination/test",
    response_model=ConnectionCheck,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Test the destination's connection",
)
async def post_test_destination(ctx: Context, who: Operator, client_id: str) -> ConnectionCheck:
    return await test_destination(ctx, who, client_id)
