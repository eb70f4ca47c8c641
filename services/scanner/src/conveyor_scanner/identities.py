"""What the scanner recorded of each upload it keeps seeing, by key.

A file of a route with ``after_delivery: keep`` stays in the pick-up for
ever, so every scheduled scan lists it again. Each such upload is recorded
once, per key in the locks table (``identity/<bucket>/<key>``: its version,
size, LastModified and content identity), and a scan recognises the keys it
lists with batched reads (100 keys a request) instead of a read and a write
per key: its cost grows with what is new, not with what was kept. Records
expire after 30 days of not being seen; a file still there then is read once
more and recognised as a duplicate by its content.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from conveyor_shared.ledger.dynamo import epoch, from_item, to_item
from conveyor_shared.transfer.protocols import ObjectInfo

_KEEP_SECONDS = 30 * 86400
_BATCH = 100


class Upload(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def content_id(self) -> str: ...
    @property
    def modified(self) -> datetime | None: ...


def _name(bucket: str, key: str) -> str:
    return f"identity/{bucket}/{key}"


def _stamp(when: datetime | None) -> int | None:
    return int(when.timestamp()) if when is not None else None


class KnownIdentities:
    def __init__(self, client: Any, locks_table: str) -> None:
        self._db = client
        self.table = locks_table

    async def remember(self, bucket: str, upload: Upload) -> None:
        """Record ``upload`` as the one its key now holds (the newest one wins)."""
        await self._db.put_item(
            TableName=self.table,
            Item=to_item(
                {
                    "name": _name(bucket, upload.key),
                    "version": upload.version,
                    "size": upload.size,
                    "modified": _stamp(upload.modified),
                    "contentId": upload.content_id,
                    "ttl": epoch() + _KEEP_SECONDS,
                }
            ),
        )

    async def unknown(self, bucket: str, listed: Sequence[ObjectInfo]) -> list[ObjectInfo]:
        """Those of ``listed`` (a listing of ``bucket``) not recorded as they are
        now: same size and LastModified."""
        known: dict[str, dict[str, Any]] = {}
        for start in range(0, len(listed), _BATCH):
            known |= await self._get_many(bucket, (i.path for i in listed[start : start + _BATCH]))
        return [
            info
            for info in listed
            if (seen := known.get(info.path)) is None
            or seen.get("size") != info.size
            or seen.get("modified") != _stamp(info.modified)
        ]

    async def _get_many(self, bucket: str, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        names = {_name(bucket, key): key for key in keys}
        found: dict[str, dict[str, Any]] = {}
        request: dict[str, Any] = {self.table: {"Keys": [to_item({"name": n}) for n in names]}}
        while request:
            response = await self._db.batch_get_item(RequestItems=request)
            for item in response.get("Responses", {}).get(self.table, []):
                plain = from_item(item)
                found[names[plain["name"]]] = plain
            request = response.get("UnprocessedKeys") or {}
        return found
