"""The content identity the scanner computed for an upload, remembered.

Where S3 keeps no full-object SHA-256, the identity costs a read of the
object (``conveyor_shared.identity``). A scheduled scan meets the same upload
again as long as it stays in the pick-up (in flight, held, or kept with
``after_delivery: keep``), and S3 sends some events twice; so the identity
is recorded per key and version in the locks table
(``identity/<bucket>/<key>``), and each upload is read once. Records expire
after 30 days; one still in the pick-up then is read once more.
"""

from __future__ import annotations

from typing import Any

from conveyor_shared.ledger.dynamo import epoch, from_item, to_item

_KEEP_SECONDS = 30 * 86400


def _name(bucket: str, key: str) -> str:
    return f"identity/{bucket}/{key}"


class KnownIdentities:
    def __init__(self, client: Any, locks_table: str) -> None:
        self._db = client
        self.table = locks_table

    async def get(self, bucket: str, key: str, version: str) -> str | None:
        """The identity recorded for ``key`` at ``version``, if any."""
        response = await self._db.get_item(
            TableName=self.table, Key=to_item({"name": _name(bucket, key)})
        )
        item = from_item(response.get("Item") or {})
        return str(item["contentId"]) if item.get("version") == version else None

    async def remember(self, bucket: str, key: str, version: str, content_id: str) -> None:
        """Record the identity of ``key`` at ``version`` (the newest upload wins)."""
        await self._db.put_item(
            TableName=self.table,
            Item=to_item(
                {
                    "name": _name(bucket, key),
                    "version": version,
                    "contentId": content_id,
                    "ttl": epoch() + _KEEP_SECONDS,
                }
            ),
        )
