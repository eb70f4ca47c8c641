"""The care team's pages (S6): files received per provider source, newest
first, marked when new since the viewer's last visit, searchable by name,
each downloadable through a short-lived presigned S3 URL of the stored
version, and every download recorded (who, when).

The rows come from ``received_files``, the one place that knows where
received files are recorded: the read model's list of provider sync's
received versions (``conveyor_api.received``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

import structlog
from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import RedirectResponse

from conveyor_api.context import ApiContext
from conveyor_api.models import FileDetail, ReceivedFile
from conveyor_api.problems import ProblemError, not_found
from conveyor_api.read import file_detail
from conveyor_api.received import ReceivedQuery, list_received
from conveyor_api.records import file_subject, new_action_id, record_action
from conveyor_api.web.access import Ctx, FormViewer, SignedIn, WebRoute
from conveyor_api.web.links import ClientInForm, IdInForm, page_context
from conveyor_api.web.render import render
from conveyor_api.web.visits import last_visit
from conveyor_shared.backends.s3 import S3Store, version_id
from conveyor_shared.errors import NotFound

log = structlog.get_logger("conveyor.web")

router = APIRouter(route_class=WebRoute)

#: A presigned download link works this long; the page makes a new one per click.
DOWNLOAD_SECONDS = 300
#: Files shown per provider on the page with every provider.
PER_PROVIDER = 10


@dataclass(frozen=True)
class ProviderFiles:
    provider: str
    name: str
    files: list[ReceivedFile]
    next_cursor: str | None


async def received_files(
    ctx: ApiContext, provider: str, name: str | None, cursor: str | None, limit: int
) -> ProviderFiles:
    """One provider source's received files, newest first (one indexed query)."""
    page = await list_received(ctx, ReceivedQuery(provider, name, limit, cursor))
    sources = {s.id: s.name for s in (await ctx.routes.get()).sources}
    return ProviderFiles(provider, sources.get(provider, provider), page.items, page.next_cursor)


def received_subject(source_id: str, path: str, sha256: str) -> str:
    """What a received version's actions are recorded on."""
    return f"received/{source_id}/{path}#{sha256}"


@router.get("/received", name="web_received")
async def received(
    request: Request,
    ctx: Ctx,
    who: SignedIn,
    provider: Annotated[str | None, Query(max_length=100)] = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> Response:
    providers = sorted(s.id for s in (await ctx.routes.get()).sources)
    provider, name = provider or None, name or None
    if provider is not None:
        reads = [received_files(ctx, provider, name, cursor, 50)]
    else:
        reads = [received_files(ctx, p, name, None, PER_PROVIDER) for p in providers]
    since, *groups = await asyncio.gather(
        last_visit(ctx.db, ctx.names.locks_table, who.caller.key_id), *reads
    )
    context = page_context(who, "received") | {
        "groups": groups,
        "providers": providers,
        "filters": {"provider": provider, "name": name},
        "since": since,
        "paged": provider is not None,
    }
    return render(request, "received.html", context)


def download_object(detail: FileDetail) -> tuple[str, str, str | None]:
    """The S3 object to hand out (bucket, key, version token): the delivered
    copy when it is in S3, else the upload as it was picked up."""
    if detail.destination_uri and detail.destination_uri.startswith("s3://"):
        bucket, _, key = detail.destination_uri.removeprefix("s3://").partition("/")
        if bucket and key:
            return bucket, key, None
    bucket, _, key = detail.source_uri.removeprefix("s3://").partition("/")
    return bucket, key, detail.source_version


@router.post("/download", name="web_download")
async def download(
    ctx: Ctx,
    who: FormViewer,
    client: ClientInForm,
    id: IdInForm,
) -> Response:
    """Record the download, then send the browser to a presigned URL of the
    object (valid ``DOWNLOAD_SECONDS``), which S3 serves as an attachment."""
    detail = await file_detail(ctx, client, id)
    if detail is None:
        raise not_found("file")
    bucket, key, version = download_object(detail)
    url = await _presigned(ctx, bucket, key, version, detail.file_name)
    await record_action(
        ctx,
        who.caller,
        action_id=new_action_id(),
        kind="download",
        subjects=[file_subject(client, id)],
        reason=None,
        outcome=f"s3://{bucket}/{key}, link valid {DOWNLOAD_SECONDS} s",
    )
    log.info("web.download", by=who.caller.key_id, client_id=client, file=detail.file_name)
    return RedirectResponse(url, status_code=303)


async def _presigned(ctx: ApiContext, bucket: str, key: str, version: str | None, name: str) -> str:
    """A link to the object valid ``DOWNLOAD_SECONDS``, served as an
    attachment; 409 when the object is no longer there."""
    try:
        await S3Store(ctx.aws.s3, bucket).head(key, version)
    except NotFound:
        raise ProblemError(
            409, "Not available", "this file is no longer kept where it can be downloaded"
        ) from None
    params = {
        "Bucket": bucket,
        "Key": key,
        "ResponseContentDisposition": f'attachment; filename="{_ascii_name(name)}"',
    }
    if (vid := version_id(version)) is not None:
        params["VersionId"] = vid
    url: str = await ctx.aws.s3.generate_presigned_url(
        "get_object", Params=params, ExpiresIn=DOWNLOAD_SECONDS
    )
    return url


SourceInForm = Annotated[str, Form(min_length=1, max_length=100)]
PathInForm = Annotated[str, Form(min_length=1, max_length=1024)]
Sha256InForm = Annotated[str, Form(min_length=64, max_length=64, pattern="^[0-9a-f]{64}$")]


@router.post("/received/download", name="web_received_download")
async def download_received(
    ctx: Ctx, who: FormViewer, source: SourceInForm, path: PathInForm, sha256: Sha256InForm
) -> Response:
    """Record the download, then send the browser to a presigned URL of the
    stored version (its immutable landing key)."""
    version = await ctx.received.version(source, path, sha256)
    if version is None:
        raise not_found("file")
    bucket, _, key = version.uri.removeprefix("s3://").partition("/")
    name = path.rsplit("/", 1)[-1]
    url = await _presigned(ctx, bucket, key, None, name)
    await record_action(
        ctx,
        who.caller,
        action_id=new_action_id(),
        kind="download",
        subjects=[received_subject(source, path, sha256)],
        reason=None,
        outcome=f"{version.uri}, link valid {DOWNLOAD_SECONDS} s",
    )
    log.info("web.download", by=who.caller.key_id, source=source, file=path)
    return RedirectResponse(url, status_code=303)


def _ascii_name(name: str) -> str:
    """The file name as a header can carry it (the page shows the real one)."""
    return "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
