"""The operators' pages: failures first, each route's and provider source's
health, files sent,
one file's timeline, and a resend with a confirmation and a reason.

Each page shows what an API endpoint returns (``/clients``, ``/files``,
``/sources``, ``/files/{client}/{id}``) through the same read model and actions, so the
page and the API cannot disagree."""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import RedirectResponse

from conveyor_api.actions import resend_file
from conveyor_api.idempotent import idempotent
from conveyor_api.models import FileDetail, ResendRequest
from conveyor_api.problems import ProblemError, not_found
from conveyor_api.read import FileQuery, file_detail, list_files, queue_depths, route_health
from conveyor_api.sources import source_health
from conveyor_api.web.access import Ctx, FormViewer, SignedIn, WebRoute, operator
from conveyor_api.web.links import (
    ClientInForm,
    ClientInQuery,
    IdInForm,
    IdInQuery,
    file_url,
    page_context,
)
from conveyor_api.web.render import render
from conveyor_api.web.timeline import timeline, verification_text
from conveyor_shared.ledger.models import FileStatus

router = APIRouter(route_class=WebRoute)

Text = Annotated[str | None, Query(max_length=200)]

#: What a redirect after an action may ask the next page to say (never free text).
NOTICES = {
    "resent": ("good", "The file was sent again. Its new attempt appears below as it happens."),
    "already-resent": ("good", "This resend was already done; it was not repeated."),
}


@router.get("/", name="web_overview")
async def overview(request: Request, ctx: Ctx, who: SignedIn) -> Response:
    # Independent reads, made at once: the page waits for the slowest, not the sum.
    failed, waiting, health, sources, queues = await asyncio.gather(
        list_files(ctx, FileQuery(status=FileStatus.FAIL, limit=25)),
        list_files(ctx, FileQuery(status=FileStatus.PROCESSING, limit=25)),
        route_health(ctx),
        source_health(ctx),
        queue_depths(ctx),
    )
    context = page_context(who, "overview") | {
        "failed": failed,
        "waiting": waiting,
        "health": health,
        "sources": sources,
        "queues": queues,
    }
    return render(request, "overview.html", context)


def _files_query(
    client: str | None,
    status: str | None,
    name: str | None,
    checksum: str | None,
    cursor: str | None,
) -> FileQuery | None:
    """The read model's query for the filter form, or None when it is too broad
    (any status across every client is not one indexed read)."""
    chosen = FileStatus(status) if status in set(FileStatus) else None
    if client is None and checksum is None and chosen is None:
        return None
    return FileQuery(
        client=client, status=chosen, name=name, checksum=checksum, limit=50, cursor=cursor
    )


@router.get("/files", name="web_files")
async def files(
    request: Request,
    ctx: Ctx,
    who: SignedIn,
    client: Text = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    name: Text = None,
    checksum: Text = None,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> Response:
    """Files sent, newest first. Without a client the status defaults to
    delivered; every filter is in the query string, so a search is a link."""
    client, name, checksum = client or None, name or None, checksum or None
    if status is None and client is None and checksum is None:
        status = FileStatus.SUCCESS.value
    query = _files_query(client, status, name, checksum, cursor)
    page = await list_files(ctx, query) if query is not None else None
    filters = {"client": client, "status": status, "name": name, "checksum": checksum}
    next_url = None
    if page is not None and page.next_cursor:
        kept = {k: v for k, v in filters.items() if v}
        next_url = str(
            request.url_for("web_files").include_query_params(**kept, cursor=page.next_cursor)
        )
    routes = (await ctx.routes.get()).routes
    context = page_context(who, "files") | {
        "page": page,
        "filters": filters,
        "clients": sorted({r.client_id for r in routes}),
        "statuses": [s.value for s in FileStatus],
        "next_url": next_url,
    }
    return render(request, "files.html", context)


async def _detail(ctx: Ctx, client: str, content_id: str) -> FileDetail:
    detail = await file_detail(ctx, client, content_id)
    if detail is None:
        raise not_found("file")
    return detail


@router.get("/file", name="web_file")
async def file_page(
    request: Request,
    ctx: Ctx,
    who: SignedIn,
    client: ClientInQuery,
    id: IdInQuery,
    notice: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    detail = await _detail(ctx, client, id)
    kind, text = NOTICES.get(notice or "", (None, None))
    context = page_context(who, "files") | {
        "file": detail,
        "events": timeline(detail),
        "verification": verification_text(detail.verified_by),
        "flash": {"kind": kind, "text": text} if text else None,
        # A fresh key per rendering: submitting this form twice resends once.
        "request_id": secrets.token_urlsafe(16),
        "may_resend": who.may_operate and detail.status is not FileStatus.PROCESSING,
    }
    return render(request, "file.html", context)


@router.post("/file/resend", name="web_resend")
async def resend(
    request: Request,
    ctx: Ctx,
    who: FormViewer,
    client: ClientInForm,
    id: IdInForm,
    request_id: Annotated[str, Form(min_length=8, max_length=100)],
    reason: Annotated[str, Form(max_length=500)] = "",
    confirm: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Resend one file (D5), recorded with who, when and why. The same
    ``request_id`` posted again (a double click, a retried request) is the
    API's idempotent replay: one resend."""
    operator(who)
    if confirm != "yes" or not reason.strip():
        raise ProblemError(
            400, "Not resent", "tick the confirmation and say why the file is sent again"
        )
    body = ResendRequest(reason=reason.strip())
    response = await idempotent(
        ctx,
        who.caller,
        request,
        f"web-resend-{request_id}",
        body,
        lambda: resend_file(ctx, who.caller, client, id, body.reason),
    )
    replayed = response.headers.get("Idempotent-Replayed") == "true"
    notice = "already-resent" if replayed else "resent"
    return RedirectResponse(file_url(request, client, id, notice=notice), status_code=303)
