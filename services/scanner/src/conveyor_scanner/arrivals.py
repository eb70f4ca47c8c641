"""When each file of a done-file route arrived, to the millisecond (D3).

S3's ``LastModified`` has one-second precision (and for a multipart upload it
is when the upload began, not when the file appeared), so it cannot tell a
file uploaded just before a ``.done`` from one uploaded just after it. The
``eventTime`` of each S3 event can: the scanner records it, per key, in the
locks table (``arrival/<bucket>/<key>``, with the upload's ETag), keeping the
newest when one key is uploaded twice. Records expire after 14 days.
Every replica reads and writes the same records, so the decision is the same
whichever replica handles the ``.done``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from conveyor_shared.ledger.dynamo import condition_failed, epoch, from_item, iso_time, to_item
from conveyor_shared.ledger.dynamo import values as expression_values

_KEEP_SECONDS = 14 * 86400
_BATCH_GET = 100


@dataclass(frozen=True)
class Arrival:
    etag: str
    #: The S3 event's ``eventTime``, in the ledger's time format (sortable).
    at: str


def _name(bucket: str, key: str) -> str:
    return f"arrival/{bucket}/{key}"


class ArrivalLog:
    def __init__(self, client: Any, locks_table: str) -> None:
        self._db = client
        self.table = locks_table

    async def note(self, bucket: str, key: str, etag: str, at: datetime) -> None:
        """Record that ``key`` (with ``etag``) arrived at ``at``, unless a later
        arrival of the same key is recorded already (events come in any order)."""
        when = iso_time(at)
        item = {
            "name": _name(bucket, key),
            "etag": etag,
            "at": when,
            "ttl": epoch() + _KEEP_SECONDS,
        }
        try:
            await self._db.put_item(
                TableName=self.table,
                Item=to_item(item),
                ConditionExpression="attribute_not_exists(#n) OR #at < :at",
                ExpressionAttributeNames={"#n": "name", "#at": "at"},
                ExpressionAttributeValues=expression_values({":at": when}),
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise

    async def recorded(self, bucket: str, keys: Sequence[str]) -> dict[str, Arrival]:
        """The recorded arrival of each of ``keys`` that has one."""
        found: dict[str, Arrival] = {}
        prefix = len(_name(bucket, ""))
        for start in range(0, len(keys), _BATCH_GET):
            request = {
                self.table: {
                    "Keys": [
                        to_item({"name": _name(bucket, k)})
                        for k in keys[start : start + _BATCH_GET]
                    ],
                    "ConsistentRead": True,
                }
            }
            while request:
                response = await self._db.batch_get_item(RequestItems=request)
                for raw in response.get("Responses", {}).get(self.table, []):
                    item = from_item(raw)
                    found[str(item["name"])[prefix:]] = Arrival(str(item["etag"]), str(item["at"]))
                request = response.get("UnprocessedKeys") or {}
        return found
