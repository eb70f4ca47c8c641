"""Routes with ``trigger_on_done_file`` (D3): the batch a ``.done`` file releases.

Membership is decided by arrival order, to the millisecond: a file is in the
batch if its S3 event's ``eventTime`` (``arrivals.py``) is not later than the
``.done``'s. A file whose event has not been seen yet is decided by its
``LastModified`` second when that is clear (an earlier second: in; a later
one: out); in the ``.done``'s own second the scanner waits up to
``arrival_wait`` seconds for its event, then takes it in (an event S3 never
sent must not hold a file back for ever). Without the ``.done``'s own event
time (a scan found it), ``LastModified`` decides, to the second.

One replica at a time takes a client's batch: a lease per client in the
locks table (``done-file/<client id>``), taken with a conditional write.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from conveyor_scanner.arrivals import Arrival, ArrivalLog
from conveyor_scanner.keys import is_folder_placeholder
from conveyor_scanner.recorder import JobRecorder
from conveyor_shared.backends.s3 import S3Store, object_version
from conveyor_shared.config.models import Route
from conveyor_shared.errors import NotFound
from conveyor_shared.identity import etag_of
from conveyor_shared.ledger.dynamo import iso_time
from conveyor_shared.ledger.locks import Leases
from conveyor_shared.messaging.consumer import RetryLater

log = structlog.get_logger("conveyor.scanner")


@dataclass(frozen=True)
class Listed:
    key: str
    etag: str
    modified: datetime


def _second(when: datetime) -> int:
    return int(when.timestamp())


def _before_done(
    item: Listed, arrival: Arrival | None, done_at: str | None, done_modified: datetime
) -> bool | None:
    """Whether ``item`` was in the pick-up when the ``.done`` arrived; None
    while that cannot be told yet."""
    if done_at is None:
        return _second(item.modified) <= _second(done_modified)
    if arrival is not None and arrival.etag == item.etag:
        return arrival.at <= done_at
    if _second(item.modified) != _second(done_modified):
        return _second(item.modified) < _second(done_modified)
    return None


class DoneFileBatches:
    """Nothing moves until ``<client id>.done`` appears; then everything in
    the pick-up that was there when it appeared is one job, and exactly that
    ``.done`` (its version) is deleted after the job is recorded. A file that
    arrives after the ``.done`` waits for the next one."""

    def __init__(
        self,
        recorder: JobRecorder,
        s3_client: Any,
        arrivals: ArrivalLog,
        leases: Leases,
        *,
        lease_seconds: int = 900,
        arrival_wait: float = 10.0,
    ) -> None:
        self._recorder = recorder
        self._s3 = s3_client
        self._arrivals = arrivals
        self._leases = leases
        self._lease_seconds = lease_seconds
        self._arrival_wait = arrival_wait

    async def take(self, route: Route, done_at: datetime | None = None) -> str | None:
        """Record the batch of ``route``'s ``.done`` (which arrived at ``done_at``,
        its S3 event's time, if known). Raises ``RetryLater`` while another
        replica takes this client's batch."""
        name, owner = f"done-file/{route.client_id}", uuid.uuid4().hex
        if not await self._leases.acquire(name, owner, self._lease_seconds):
            raise RetryLater(5, "another scanner is taking this client's done-file batch")
        try:
            return await self._take(route, done_at)
        finally:
            await self._leases.release(name, owner)

    async def _take(self, route: Route, done_at: datetime | None) -> str | None:
        pickup = S3Store(self._s3, route.pickup.bucket)
        try:
            done = await pickup.head(route.done_file_key)
        except NotFound:
            log.info("done_file.already_handled", client_id=route.client_id)
            return None
        done_iso = iso_time(done_at) if done_at else await self._recorded_time(route, done)
        keys = await self._members(
            route, await self._listing(route), done_iso, done["LastModified"]
        )
        job_id = await self._recorder.record(route, keys) if keys else None
        await pickup.delete(route.done_file_key, version=object_version(done))
        log.info("done_file.processed", client_id=route.client_id, job_id=job_id, files=len(keys))
        return job_id

    async def _recorded_time(self, route: Route, done: dict[str, Any]) -> str | None:
        key = route.done_file_key
        arrival = (await self._arrivals.recorded(route.pickup.bucket, [key])).get(key)
        if arrival is not None and arrival.etag == etag_of(done):
            return arrival.at
        log.info(
            "done_file.arrival_unknown",
            client_id=route.client_id,
            reason="no event seen for the .done; files are compared by LastModified",
        )
        return None

    async def _listing(self, route: Route) -> list[Listed]:
        paginator = self._s3.get_paginator("list_objects_v2")
        listed = []
        async for page in paginator.paginate(
            Bucket=route.pickup.bucket, Prefix=route.pickup.prefix
        ):
            for item in page.get("Contents", []):
                key = str(item["Key"])
                if key != route.done_file_key and not is_folder_placeholder(key):
                    listed.append(Listed(key, etag_of(item), item["LastModified"]))
        return listed

    async def _members(
        self, route: Route, listed: Sequence[Listed], done_at: str | None, done_modified: datetime
    ) -> list[str]:
        members: list[str] = []
        pending = list(listed)
        deadline = time.monotonic() + self._arrival_wait
        while pending:
            arrivals = await self._arrivals.recorded(route.pickup.bucket, [i.key for i in pending])
            undecided = []
            for item in pending:
                verdict = _before_done(item, arrivals.get(item.key), done_at, done_modified)
                if verdict is None:
                    undecided.append(item)
                elif verdict:
                    members.append(item.key)
            if undecided and time.monotonic() >= deadline:
                log.warning(
                    "done_file.arrival_unknown",
                    client_id=route.client_id,
                    keys=[i.key for i in undecided],
                    reason="no S3 event seen for these files, uploaded in the .done's second; "
                    "taken in the batch",
                )
                members += [i.key for i in undecided]
                break
            pending = undecided
            if pending:
                await asyncio.sleep(0.25)  # their events are on the way
        return members
