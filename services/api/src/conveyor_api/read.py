"""The read model over the ledger: files (filtered, newest first, paged),
one file's history, jobs, queue depths, and each route's health.

Every list is a DynamoDB ``Query`` on an index (``deploy/conveyor.yaml``):
``byClientTime`` for one client's files, ``byStatus`` for one status across
clients, ``byContent`` for a checksum; never a ``Scan``. Plain async
functions of an ``ApiContext``, so the web page calls the same code.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from conveyor_api.context import ApiContext
from conveyor_api.cursors import decode_cursor, encode_cursor
from conveyor_api.models import (
    FileDetail,
    FilePage,
    FileSummary,
    JobDetail,
    JobSummary,
    Progress,
    QueueDepth,
    RouteHealth,
)
from conveyor_api.problems import ProblemError
from conveyor_api.records import actions_on, file_subject
from conveyor_shared.ledger.dynamo import from_item, iso_ago, iso_time, parse_iso, values
from conveyor_shared.ledger.models import FileEntry, FileStatus

_EARLIEST = "0000"
_LATEST = "9999"


@dataclass(frozen=True)
class FileQuery:
    """Which files: at least one of ``client``, ``status`` or ``checksum``."""

    client: str | None = None
    status: FileStatus | None = None
    since: datetime | None = None
    until: datetime | None = None
    name: str | None = None
    checksum: str | None = None
    limit: int = 50
    cursor: str | None = None


def content_id_of(checksum: str) -> str:
    """A checksum as the ledger keys it: a bare SHA-256 hex gets its ``sha256:`` prefix."""
    text = checksum.strip()
    return text if ":" in text else f"sha256:{text.lower()}"


def _query_arguments(ctx: ApiContext, query: FileQuery) -> dict[str, Any]:
    """The ``Query`` for ``query``: its index, key condition and filter."""
    names: dict[str, str] = {}
    bound: dict[str, Any] = {}
    keys: list[str] = []
    filters: list[str] = []
    since = iso_time(query.since) if query.since else _EARLIEST
    until = iso_time(query.until) if query.until else _LATEST
    if query.checksum is not None:
        index = "byContent"
        keys.append("contentId = :content")
        bound[":content"] = content_id_of(query.checksum)
        if query.client is not None:
            keys.append("clientId = :client")
            bound[":client"] = query.client
        if query.status is not None:
            filters.append("#s = :status")
            names["#s"] = "status"
            bound[":status"] = query.status.value
        if query.since or query.until:
            filters.append("#ts BETWEEN :since AND :until")
    elif query.client is not None:
        index = "byClientTime"
        keys += ["clientId = :client", "#ts BETWEEN :since AND :until"]
        bound[":client"] = query.client
        if query.status is not None:
            filters.append("#s = :status")
            names["#s"] = "status"
            bound[":status"] = query.status.value
    elif query.status is not None:
        index = "byStatus"
        keys += ["#s = :status", "#ts BETWEEN :since AND :until"]
        names["#s"] = "status"
        bound[":status"] = query.status.value
    else:
        raise ProblemError(400, "Too broad", "give a client, a status or a checksum")
    if "#ts BETWEEN :since AND :until" in keys + filters:
        names["#ts"] = "timestamp"
        bound |= {":since": since, ":until": until}
    if query.name is not None:
        filters.append("contains(fileName, :name)")
        bound[":name"] = query.name
    arguments: dict[str, Any] = {
        "TableName": ctx.files.table,
        "IndexName": index,
        "KeyConditionExpression": " AND ".join(keys),
        "ExpressionAttributeValues": values(bound),
        "ScanIndexForward": False,
    }
    if names:
        arguments["ExpressionAttributeNames"] = names
    if filters:
        arguments["FilterExpression"] = " AND ".join(filters)
    return arguments


#: Reads one page may take when a filter discards most of what it reads.
MAX_READS_PER_PAGE = 10
#: With a filter, each read evaluates this many entries at most (DynamoDB's
#: ``Limit`` counts entries read, not entries kept).
FILTERED_READ = 500

#: The key attributes of each index's entries: what a cursor after an entry holds.
_INDEX_KEYS = {
    "byClientTime": ("clientId", "contentId", "timestamp"),
    "byStatus": ("clientId", "contentId", "status", "timestamp"),
    "byContent": ("clientId", "contentId"),
}


async def _read(ctx: ApiContext, arguments: dict[str, Any]) -> dict[str, Any]:
    try:
        response: dict[str, Any] = await ctx.db.query(**arguments)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ValidationException":
            raise ProblemError(400, "Invalid cursor", "this cursor is not of this query") from None
        raise
    return response


async def list_files(ctx: ApiContext, query: FileQuery) -> FilePage:
    """One page of files, newest first.

    Without a filter each read asks for exactly what is missing. With one
    (``name``, or ``status`` within a client), a read evaluates up to
    ``FILTERED_READ`` entries; what it keeps beyond the page is dropped and
    the cursor then points just after the page's last entry, so the next
    page starts exactly there. After ``MAX_READS_PER_PAGE`` reads a page is
    returned short, with a cursor: no request reads a whole history."""
    arguments = _query_arguments(ctx, query)
    filtered = "FilterExpression" in arguments
    start = decode_cursor(query.cursor)
    raw: list[dict[str, Any]] = []
    for _ in range(MAX_READS_PER_PAGE):
        missing = query.limit - len(raw)
        page_arguments = {**arguments, "Limit": FILTERED_READ if filtered else missing}
        if start:
            page_arguments["ExclusiveStartKey"] = start
        response = await _read(ctx, page_arguments)
        raw += response["Items"]
        start = response.get("LastEvaluatedKey")
        if len(raw) > query.limit:
            raw = raw[: query.limit]
            start = {k: raw[-1][k] for k in _INDEX_KEYS[arguments["IndexName"]]}
        if not start or len(raw) >= query.limit:
            break
    items = [FileSummary.of(FileEntry.model_validate(from_item(i))) for i in raw]
    return FilePage(items=items, next_cursor=encode_cursor(start))


async def iter_files(ctx: ApiContext, query: FileQuery, most: int) -> AsyncIterator[FileSummary]:
    """Every file ``query`` matches, newest first, up to ``most``."""
    seen = 0
    page_query = replace(query, limit=min(most, 500))
    while True:
        page = await list_files(ctx, page_query)
        for item in page.items:
            if seen >= most:
                return
            seen += 1
            yield item
        if page.next_cursor is None:
            return
        page_query = replace(page_query, cursor=page.next_cursor)


CSV_COLUMNS = (
    "clientId",
    "contentId",
    "fileName",
    "status",
    "timestamp",
    "jobId",
    "routeName",
    "size",
    "sendAttempts",
    "lastError",
    "deliveredTo",
)


async def files_csv(ctx: ApiContext, query: FileQuery) -> AsyncIterator[str]:
    """The files ``query`` matches as CSV, a header first, streamed page by page."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(row: list[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(row)
        return buffer.getvalue()

    yield line(list(CSV_COLUMNS))
    async for item in iter_files(ctx, query, ctx.settings.csv_max_rows):
        plain = item.model_dump(by_alias=True, mode="json")
        yield line(["" if plain.get(c) is None else plain[c] for c in CSV_COLUMNS])


async def file_detail(ctx: ApiContext, client_id: str, content_id: str) -> FileDetail | None:
    """One file's whole story: every attempt, how it was verified, sizes,
    checksums, where it came from and went, progress in flight, and every
    operator action taken on it."""
    entry = await ctx.files.get(client_id, content_id)
    if entry is None:
        return None
    progress = None
    if entry.active and entry.bytes_done is not None:
        percent = 100.0 * entry.bytes_done / entry.size if entry.size else None
        progress = Progress(
            bytes_done=entry.bytes_done, size=entry.size, percent=percent, at=entry.progress_at
        )
    return FileDetail.model_validate(
        {
            **entry.model_dump(),
            "source_uri": f"s3://{entry.source_bucket}/{entry.source_key}",
            "destination_uri": entry.delivered_to,
            "progress": progress,
            "attempts": entry.attempts or [],
            "actions": await actions_on(ctx, file_subject(client_id, content_id)),
        }
    )


async def list_jobs(ctx: ApiContext, client_id: str, limit: int) -> list[JobSummary]:
    return [JobSummary.of(j) for j in await ctx.jobs.jobs_of_client(client_id, limit)]


async def job_detail(ctx: ApiContext, job_id: str) -> JobDetail | None:
    job = await ctx.jobs.get(job_id)
    if job is None:
        return None
    files = await ctx.files.files_of_job(job_id)
    return JobDetail.model_validate(
        {**job.model_dump(), "files": [FileSummary.of(f) for f in files]}
    )


# --- queues and health ----------------------------------------------------------------------

DESTINATION_TYPES = ("gcs", "sftp", "s3", "ftp")


def queue_names(ctx: ApiContext) -> list[str]:
    names = ctx.names
    transfer = [names.transfer_queue(t) for t in DESTINATION_TYPES]
    return [names.scanner_queue, *transfer, names.notifier_queue]


async def _depth_of(ctx: ApiContext, name: str) -> tuple[int, int, int] | None:
    try:
        url = await ctx.aws.queue_url(name)
        response = await ctx.aws.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
    except ClientError as exc:
        if "NonExistentQueue" in str(exc.response.get("Error", {}).get("Code", "")):
            return None
        raise
    got = response.get("Attributes", {})
    return (
        int(got.get("ApproximateNumberOfMessages", 0)),
        int(got.get("ApproximateNumberOfMessagesNotVisible", 0)),
        int(got.get("ApproximateNumberOfMessagesDelayed", 0)),
    )


async def queue_depth(ctx: ApiContext, name: str) -> QueueDepth | None:
    """One queue of this deployment and its dead-letter queue; None if it does not exist."""
    depth = await _depth_of(ctx, name)
    if depth is None:
        return None
    dead_letter_queue = ctx.names.dead_letter_queue(name)
    dead = await _depth_of(ctx, dead_letter_queue)
    return QueueDepth(
        name=name,
        visible=depth[0],
        in_flight=depth[1],
        delayed=depth[2],
        dead_letter_queue=dead_letter_queue if dead is not None else None,
        dead_letters=sum(dead) if dead is not None else None,
    )


async def queue_depths(ctx: ApiContext) -> list[QueueDepth]:
    depths = [await queue_depth(ctx, name) for name in queue_names(ctx)]
    return [d for d in depths if d is not None]


async def _last_delivery(ctx: ApiContext, client_id: str) -> str | None:
    query = FileQuery(client=client_id, status=FileStatus.SUCCESS, limit=1)
    page = await list_files(ctx, query)
    return page.items[0].timestamp if page.items else None


async def _oldest_active(ctx: ApiContext, client_id: str) -> float | None:
    response = await ctx.db.query(
        TableName=ctx.files.table,
        IndexName="active",
        KeyConditionExpression="clientId = :client",
        ExpressionAttributeValues=values({":client": client_id}),
        ScanIndexForward=True,
        Limit=1,
    )
    items = response.get("Items", [])
    if not items:
        return None
    since = from_item(items[0]).get("activeSince")
    if not since:
        return None
    return (datetime.now(parse_iso(since).tzinfo) - parse_iso(since)).total_seconds()


async def _failed_since(ctx: ApiContext, client_id: str, since_iso: str) -> int:
    arguments = _query_arguments(
        ctx, FileQuery(client=client_id, status=FileStatus.FAIL, since=parse_iso(since_iso))
    )
    count = 0
    paginator = ctx.db.get_paginator("query")
    async for page in paginator.paginate(**arguments, Select="COUNT"):
        count += int(page.get("Count", 0))
    return count


async def route_health(ctx: ApiContext) -> list[RouteHealth]:
    """Each route: its last delivery, the age of its oldest file still on its
    way, files failed in the last 24 hours, and its destination's dead letters."""
    routes = (await ctx.routes.get()).routes
    dead: dict[str, int | None] = {}
    health = []
    for route in routes:
        kind = route.destination.type
        if kind not in dead:
            depth = await queue_depth(ctx, ctx.names.transfer_queue(kind))
            dead[kind] = depth.dead_letters if depth else None
        health.append(
            RouteHealth(
                client_id=route.client_id,
                route_name=route.name,
                destination_type=kind,
                last_delivery_at=await _last_delivery(ctx, route.client_id),
                oldest_unprocessed_seconds=await _oldest_active(ctx, route.client_id),
                failed_last_24h=await _failed_since(ctx, route.client_id, iso_ago(86400)),
                dead_letters=dead[kind],
            )
        )
    return health
