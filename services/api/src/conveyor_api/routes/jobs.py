"""Jobs: a client's recent jobs, one job with its files, resending a job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from conveyor_api.actions import resend_job
from conveyor_api.auth import Operator, Reader
from conveyor_api.context import Context
from conveyor_api.idempotent import IdempotencyKey, idempotent
from conveyor_api.models import JobDetail, JobSummary, ResendRequest, ResendResult
from conveyor_api.problems import COMMON_PROBLEMS, NOT_FOUND, not_found
from conveyor_api.read import job_detail, list_jobs

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=COMMON_PROBLEMS)


@router.get("", response_model=list[JobSummary], summary="A client's jobs, newest first")
async def get_jobs(
    ctx: Context,
    _who: Reader,
    client: Annotated[str, Query(min_length=1, max_length=100)],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[JobSummary]:
    return await list_jobs(ctx, client, limit)


@router.get("/{job_id}", response_model=JobDetail, responses=NOT_FOUND, summary="One job")
async def get_job(ctx: Context, _who: Reader, job_id: str) -> JobDetail:
    detail = await job_detail(ctx, job_id)
    if detail is None:
        raise not_found("job")
    return detail


@router.post(
    "/{job_id}/resend",
    response_model=ResendResult,
    responses=NOT_FOUND,
    summary="Send every settled file of a job again, as one new job",
)
async def post_resend_job(
    ctx: Context,
    who: Operator,
    request: Request,
    job_id: str,
    body: ResendRequest,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return await idempotent(
        ctx, who, request, idempotency_key, body, lambda: resend_job(ctx, who, job_id, body.reason)
    )
