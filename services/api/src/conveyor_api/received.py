"""The read model of files received (S3, S6): provider sync's versions in
the received table, newest first, for one source or every source.

Each source is read on the sparse ``byStoredAt`` index (source, ``storedAt``),
so a page is one ``Query`` per source, never a ``Scan``. Every source's page
is merged newest first; the opaque cursor holds, per source, where its next
read starts, so paging across sources neither skips nor repeats a file."""

from __future__ import annotations

import asyncio
import heapq
from dataclasses import dataclass
from typing import Any

from conveyor_api.context import ApiContext
from conveyor_api.cursors import decode_json, encode_json, invalid_cursor, is_string_key
from conveyor_api.models import ReceivedFile, ReceivedPage
from conveyor_api.problems import ProblemError, not_found
from conveyor_shared.ledger.received import ReceivedVersion

#: With a name filter each read evaluates this many versions at most.
FILTERED_READ = 500
#: Reads one source's part of a page may take when the filter keeps few.
MAX_READS = 10


@dataclass(frozen=True)
class ReceivedQuery:
    #: One source's files, or (None) every source's.
    source: str | None = None
    #: Part of the remote path (and so of the file name).
    name: str | None = None
    limit: int = 50
    cursor: str | None = None


def position(version: ReceivedVersion) -> dict[str, Any]:
    """The index key just after ``version``: where a read after it starts."""
    return {
        "source": {"S": version.source},
        "key": {"S": f"version#{version.path}#{version.sha256}"},
        "storedAt": {"S": version.stored_at},
    }


# A source's entry in a cursor: the key its next read starts after, ``{}`` to
# start at its newest file, or None once it has no more.
Positions = dict[str, dict[str, Any] | None]


#: The attributes of a ``byStoredAt`` key.
_KEY = frozenset({"source", "key", "storedAt"})


def encode(positions: Positions) -> str | None:
    if all(p is None for p in positions.values()):
        return None
    return encode_json(positions)


def _valid_position(key: Any, source: str) -> bool:
    if key is None or key == {}:
        return True
    return is_string_key(key, _KEY) and set(key) == _KEY and key["source"]["S"] == source


def decode(cursor: str | None) -> Positions | None:
    """A cursor as given back; a tampered one is a 400."""
    if not cursor:
        return None
    value = decode_json(cursor)
    if not isinstance(value, dict) or not value:
        raise invalid_cursor()
    if not all(_valid_position(k, s) for s, k in value.items()):
        raise invalid_cursor()
    return value


async def _source_page(
    ctx: ApiContext, source: str, start: dict[str, Any] | None, name: str | None, limit: int
) -> tuple[list[ReceivedVersion], dict[str, Any] | None]:
    """Up to ``limit`` of ``source``'s newest versions from ``start``, and
    where its next read starts (None: no more). Short, with a start, when the
    name filter kept too few in ``MAX_READS`` reads."""
    found: list[ReceivedVersion] = []
    for _ in range(MAX_READS):
        read = FILTERED_READ if name else limit - len(found)
        got, start = await ctx.received.recent(source, limit=read, name=name, start=start)
        found += got
        if len(found) >= limit or start is None:
            break
    if len(found) > limit:
        found = found[:limit]
        start = position(found[-1])
    return found, start


async def list_received(ctx: ApiContext, query: ReceivedQuery) -> ReceivedPage:
    """One page of received files, newest first."""
    names = {s.id: s.name for s in (await ctx.routes.get()).sources}
    if query.source is not None and query.source not in names:
        raise not_found("source")
    chosen = [query.source] if query.source is not None else list(names)
    positions = decode(query.cursor)
    if positions is not None and not set(positions) <= set(chosen):
        raise ProblemError(400, "Invalid cursor", "this cursor is not of this query")
    # A source the cursor does not name (a new one) starts at its newest file.
    starts: Positions = {s: (positions or {}).get(s, {}) for s in chosen}
    reading = [s for s, start in starts.items() if start is not None]
    read = await asyncio.gather(
        *(_source_page(ctx, s, starts[s] or None, query.name, query.limit) for s in reading)
    )
    pages = dict(zip(reading, read, strict=True))
    frontier = _frontier(read, query.limit)
    merged = heapq.merge(*(page for page, _ in read), key=lambda v: v.stored_at, reverse=True)
    taken = [v for v in merged if v.stored_at >= frontier][: query.limit]
    return ReceivedPage(
        items=[ReceivedFile.of(v, names.get(v.source)) for v in taken],
        next_cursor=encode(_next_positions(starts, pages, taken)),
    )


def _next_positions(
    starts: Positions,
    pages: dict[str, tuple[list[ReceivedVersion], dict[str, Any] | None]],
    taken: list[ReceivedVersion],
) -> Positions:
    """Where each source's next read starts: after the last of its files this
    page shows, where it was if the page shows none, and after all it read
    if the page shows all of it."""
    following: Positions = {s: start for s, start in starts.items() if s not in pages}
    for source, (page, start) in pages.items():
        mine = [v for v in taken if v.source == source]
        if len(mine) == len(page):
            following[source] = start
        else:
            following[source] = position(mine[-1]) if mine else starts[source]
    return following


def _frontier(pages: list[tuple[list[ReceivedVersion], dict[str, Any] | None]], limit: int) -> str:
    """The oldest ``storedAt`` a merged page may show. A source cut short by
    the name filter may hold unread files older than its last one read but
    newer than what other sources returned: the page stops where it stopped."""
    stops = [
        page[-1].stored_at if page else str(start["storedAt"]["S"])
        for page, start in pages
        if start is not None and len(page) < limit
    ]
    return max(stops, default="")
