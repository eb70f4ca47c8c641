"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from conveyor_api.auth import Reader
from conveyor_api.context import Context
from conveyor_api.models import Health
from conveyor_api.problems import COMMON_PROBLEMS

router = APIRouter(tags=["system"])


@router.get("/healthz", response_model=Health, summary="The process is up (no key needed)")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health, "description": "DynamoDB or SQS cannot be reached"}},
    summary="DynamoDB and SQS are reachable",
)
async def readyz(ctx: Context, _who: Reader) -> Response:
    checks: dict[str, str] = {}
    try:
        await ctx.db.describe_table(TableName=ctx.files.table)
        checks["dynamodb"] = "ok"
    except Exception as exc:
        checks["dynamodb"] = type(exc).__name__
    try:
        await ctx.aws.queue_url(ctx.names.scanner_queue)
        checks["sqs"] = "ok"
    except Exception as exc:
        checks["sqs"] = type(exc).__name__
    ready = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    responses={
        **COMMON_PROBLEMS,
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
    },
    response_class=Response,
    summary="Prometheus metrics",
)
async def metrics(request: Request, _who: Reader) -> Response:
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
