"""Destination paths in the locks table: who is delivering to a path right now,
and how new the newest upload delivered there was.

Two uploads of one pick-up key are two files (two ledger entries) bound for
one destination path. Holding the path while a file goes there keeps their
bytes apart; remembering the newest delivered upload (by the time the
scanner recorded it) keeps an older one, retried late, from landing over a
correction. Both ride on the writes the lease needs anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from conveyor_shared.ledger.claims import Clause, Lease
from conveyor_shared.ledger.dynamo import condition_failed, epoch, from_item, to_item, values

_LEASE = Lease(owner="owner", expires="expiresAt")


@dataclass(frozen=True)
class PathHold:
    #: Whether the path is ours now.
    held: bool
    #: When the newest upload delivered to this path was recorded, if any.
    newest_delivered: str | None = None


class DestinationPaths:
    def __init__(self, client: Any, table: str) -> None:
        self._db = client
        self.table = table

    async def hold(self, name: str, owner: str, seconds: int) -> PathHold:
        """Take or renew path ``name`` for ``seconds``; not held if another owner has it."""
        now = epoch()
        condition = Clause("attribute_not_exists(#n)", {"#n": "name"}) | _LEASE.takeable_by(
            owner, now
        )
        take = _LEASE.assign(owner, seconds)
        try:
            response = await self._db.update_item(
                TableName=self.table,
                Key=to_item({"name": name}),
                UpdateExpression=f"SET {take.text}, #ttl = :ttl",
                ConditionExpression=condition.text,
                ExpressionAttributeNames={**condition.names, **take.names, "#ttl": "ttl"},
                ExpressionAttributeValues=values(
                    {**condition.values, **take.values, ":ttl": now + 90 * 86400}
                ),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if condition_failed(exc):
                return PathHold(False)
            raise
        item = from_item(response["Attributes"])
        return PathHold(True, item.get("newestDelivered"))

    async def release(self, name: str, owner: str, delivered: str | None = None) -> None:
        """Give the path back, if still ours; ``delivered`` records the upload
        just delivered there as the newest (it was checked on ``hold``)."""
        held = _LEASE.held_by(owner)
        removal = _LEASE.removal()
        update = f"REMOVE {removal.text}"
        bound: dict[str, Any] = dict(held.values)
        if delivered is not None:
            update += " SET newestDelivered = :delivered"
            bound[":delivered"] = delivered
        try:
            await self._db.update_item(
                TableName=self.table,
                Key=to_item({"name": name}),
                UpdateExpression=update,
                ConditionExpression=held.text,
                ExpressionAttributeNames={**held.names, **removal.names},
                ExpressionAttributeValues=values(bound),
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise
