"""Sources that have gone quiet (S1, B4): no good poll in their last
``OVERDUE_INTERVALS`` intervals. A poll sets ``polledAt`` on its source's
poll lease (``sync-poll#<id>`` in the locks table) only when it listed the
server and recorded what it found, so a failing poll leaves it behind.

The count is emitted as ``SourcesOverdue`` after every schedule tick, 0
included: the alarm treats missing data as breaching, so a provider-sync
that stopped polling altogether is seen too.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from conveyor_shared.config.sources import ProviderSource
from conveyor_shared.ledger.dynamo import from_item, parse_iso, to_item

#: Intervals without a good poll after which a source counts as overdue.
OVERDUE_INTERVALS = 3
#: DynamoDB's limit of keys in one BatchGetItem.
BATCH_KEYS = 100


def poll_lease(source_id: str) -> str:
    return f"sync-poll#{source_id}"


def is_overdue(source: ProviderSource, polled_at: str | None, now: datetime) -> bool:
    """No good poll within the last three of ``source``'s intervals. A source
    never polled is overdue: it has had no good poll either (a new source is
    polled on the tick that counts it, and is counted once at most)."""
    if polled_at is None:
        return True
    window = timedelta(minutes=OVERDUE_INTERVALS * source.schedule_minutes)
    return now - parse_iso(polled_at) > window


class OverdueSources:
    """Reads the poll leases of the configured sources from the locks table."""

    def __init__(self, dynamodb: Any, locks_table: str) -> None:
        self._db = dynamodb
        self._table = locks_table

    async def count(self, sources: Sequence[ProviderSource], now: datetime) -> int:
        polled = await self._polled_at([poll_lease(s.id) for s in sources])
        return sum(is_overdue(s, polled.get(poll_lease(s.id)), now) for s in sources)

    async def _polled_at(self, names: list[str]) -> dict[str, str]:
        """``polledAt`` of each lease that has one, by lease name."""
        found: dict[str, str] = {}
        for start in range(0, len(names), BATCH_KEYS):
            keys = [to_item({"name": n}) for n in names[start : start + BATCH_KEYS]]
            request: dict[str, Any] = {
                self._table: {
                    "Keys": keys,
                    "ProjectionExpression": "#n, polledAt",
                    "ExpressionAttributeNames": {"#n": "name"},
                    "ConsistentRead": True,
                }
            }
            while request:
                response = await self._db.batch_get_item(RequestItems=request)
                for raw in response.get("Responses", {}).get(self._table, []):
                    item = from_item(raw)
                    if item.get("polledAt"):
                        found[item["name"]] = item["polledAt"]
                # DynamoDB may leave keys unprocessed under load: ask for those again.
                request = response.get("UnprocessedKeys") or {}
        return found
