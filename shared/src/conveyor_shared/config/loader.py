"""Loading the routes file from a path or an ``s3://`` URI."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import structlog
import yaml
from botocore.exceptions import ClientError

from conveyor_shared.config.models import RoutesFile
from conveyor_shared.config.validate import ConfigError, Problem, validate_routes
from conveyor_shared.errors import NotFound, TransientError

log = structlog.get_logger("conveyor.config")


def parse_routes_text(text: str, source: str) -> RoutesFile:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError(source, [Problem(where, f"not valid YAML: {exc}")]) from None
    return validate_routes(raw, source)


async def read_routes_text(uri: str, s3_client: Any | None = None) -> str:
    if not uri.startswith("s3://"):
        try:
            return await asyncio.to_thread(Path(uri).read_text, encoding="utf-8")
        except FileNotFoundError:
            raise NotFound(f"routes file {uri} does not exist") from None
    if s3_client is None:
        raise ValueError("an s3:// routes URI needs an S3 client")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        response = await s3_client.get_object(Bucket=bucket, Key=key)
        async with response["Body"] as body:
            data: bytes = await body.read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "NoSuchBucket", "404"}:
            raise NotFound(f"routes file {uri} does not exist") from None
        raise TransientError(f"reading routes file {uri} failed: {exc}") from None
    return data.decode("utf-8")


async def load_routes(uri: str, s3_client: Any | None = None) -> RoutesFile:
    """Read and validate the routes file at ``uri``; raises ``ConfigError`` if invalid."""
    return parse_routes_text(await read_routes_text(uri, s3_client), uri)


def route_changes(old: RoutesFile, new: RoutesFile) -> dict[str, list[str]]:
    """Client ids of the routes ``new`` adds, removes and changes compared with ``old``."""
    before = {r.client_id: r for r in old.routes}
    after = {r.client_id: r for r in new.routes}
    return {
        "added": sorted(after.keys() - before.keys()),
        "removed": sorted(before.keys() - after.keys()),
        "changed": sorted(c for c in after.keys() & before.keys() if after[c] != before[c]),
    }


class RoutesSource:
    """The current routes, re-read at most every ``refresh_seconds``.

    Editing the file (adding or removing a client) takes effect without a
    restart, and is logged (``config.reloaded``, with the client ids of the
    routes added, removed and changed). An edit that fails validation is
    logged once as an error naming every problem (``config.reload_rejected``)
    and the last good routes stay in force: a typo must never stop deliveries.
    """

    def __init__(self, uri: str, s3_client: Any | None = None, refresh_seconds: float = 30.0):
        self.uri = uri
        self._s3 = s3_client
        self._refresh = refresh_seconds
        self._current: RoutesFile | None = None
        self._text: str | None = None
        self._loaded_at = 0.0
        self.last_error: ConfigError | None = None
        self._rejected_text: str | None = None

    async def get(self) -> RoutesFile:
        stale = time.monotonic() - self._loaded_at >= self._refresh
        if self._current is None or stale:
            await self._reload()
        assert self._current is not None
        return self._current

    async def _reload(self) -> None:
        text = await read_routes_text(self.uri, self._s3)
        self._loaded_at = time.monotonic()
        if self._current is not None and text in (self._text, self._rejected_text):
            return  # unchanged, or the same bad edit already reported
        try:
            routes = parse_routes_text(text, self.uri)
        except ConfigError as exc:
            self.last_error, self._rejected_text = exc, text
            if self._current is None:
                raise
            log.error(
                "config.reload_rejected",
                uri=self.uri,
                problems=[str(p) for p in exc.problems],
                reason="the edited routes file is invalid; the last good routes stay in force",
            )
            return
        previous = self._current
        self._current, self._text, self.last_error = routes, text, None
        self._rejected_text = None
        if previous is not None:
            log.info("config.reloaded", uri=self.uri, **route_changes(previous, routes))
