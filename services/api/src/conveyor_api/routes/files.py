"""Files: lists (JSON and CSV), one file's history, resends."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from conveyor_api.actions import resend_file, resend_matching
from conveyor_api.auth import Operator, Reader, Role
from conveyor_api.context import Context
from conveyor_api.idempotent import IdempotencyKey, idempotent
from conveyor_api.models import FileDetail, FilePage, ResendByFilter, ResendRequest, ResendResult
from conveyor_api.problems import COMMON_PROBLEMS, CONFLICT, NOT_FOUND, ProblemError, not_found
from conveyor_api.read import FileQuery, file_detail, files_csv, list_files
from conveyor_shared.ledger.models import FileStatus

router = APIRouter(prefix="/files", tags=["files"], responses=COMMON_PROBLEMS)

Text = Annotated[str | None, Query(min_length=1, max_length=200)]


def file_filters(
    client: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    status: FileStatus | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    name: Text = None,
    checksum: Text = None,
) -> FileQuery:
    """The filters ``/files`` and ``/files.csv`` share."""
    return FileQuery(client, status, since, until, name, checksum)


Filters = Annotated[FileQuery, Depends(file_filters)]


@router.get("", response_model=FilePage, summary="Files, newest first")
async def get_files(
    ctx: Context,
    _who: Reader,
    filters: Filters,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(min_length=1, max_length=2000)] = None,
) -> FilePage:
    """Give at least one of ``client``, ``status`` or ``checksum``; ``nextCursor``
    fetches the next page."""
    return await list_files(ctx, replace(filters, limit=limit, cursor=cursor))


@router.get(
    ".csv",
    response_class=StreamingResponse,
    summary="Files as CSV",
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def get_files_csv(ctx: Context, _who: Reader, filters: Filters) -> Response:
    """The same filters as ``/files``, every matching file (up to the export limit)."""
    # One small read first, so a bad filter is a problem response, not a broken stream.
    await list_files(ctx, replace(filters, limit=1))
    return StreamingResponse(
        files_csv(ctx, replace(filters, limit=500)),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="files.csv"'},
    )


@router.get(
    "/{client_id}/{content_id}",
    response_model=FileDetail,
    responses=NOT_FOUND,
    summary="One file's history",
)
async def get_file(ctx: Context, _who: Reader, client_id: str, content_id: str) -> FileDetail:
    detail = await file_detail(ctx, client_id, content_id)
    if detail is None:
        raise not_found("file")
    return detail


@router.post(
    "/{client_id}/{content_id}/resend",
    response_model=ResendResult,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Send one file again (D5)",
)
async def post_resend(
    ctx: Context,
    who: Operator,
    request: Request,
    client_id: str,
    content_id: str,
    body: ResendRequest,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """The file must be settled (``success`` or ``fail``) and its upload still in
    the pick-up; it becomes ``processing`` in a new job and is dispatched."""
    return await idempotent(
        ctx,
        who,
        request,
        idempotency_key,
        body,
        lambda: resend_file(ctx, who, client_id, content_id, body.reason),
    )


@router.post(
    "/resend",
    response_model=ResendResult,
    responses=CONFLICT,
    summary="Resend every file a filter matches",
)
async def post_resend_matching(
    ctx: Context,
    who: Operator,
    request: Request,
    body: ResendByFilter,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """``dryRun`` (the default) only counts; a real run needs the admin role."""
    if not body.dry_run and not who.role.allows(Role.ADMIN):
        raise ProblemError(403, "Forbidden", "a resend by filter needs the admin role")
    return await idempotent(
        ctx, who, request, idempotency_key, body, lambda: resend_matching(ctx, who, body)
    )
