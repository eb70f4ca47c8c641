"""Named leases in DynamoDB (D10): at most one holder at a time, and a crashed
holder's lease expires on its own. The rule is ``claims.Lease``'s, on the
``owner`` and ``expiresAt`` attributes of the locks table."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from conveyor_shared.ledger.claims import Clause, Lease
from conveyor_shared.ledger.dynamo import condition_failed, epoch, from_item, to_item, values

_LEASE = Lease(owner="owner", expires="expiresAt")


class Leases:
    def __init__(self, client: Any, table: str) -> None:
        self._db = client
        self.table = table

    async def acquire(self, name: str, owner: str, seconds: int) -> bool:
        """Take (or renew) lease ``name`` for ``seconds``; False if another holds it."""
        return await self.take(name, owner, seconds) is not None

    async def take(
        self, name: str, owner: str, seconds: int, keep_seconds: int = 86400
    ) -> dict[str, Any] | None:
        """Take (or renew) lease ``name``; the item as it now is, or None if
        another holds it. Other attributes of the item are kept; the item
        itself is kept ``keep_seconds`` past the lease (the table's TTL)."""
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
                    {**condition.values, **take.values, ":ttl": now + seconds + keep_seconds}
                ),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if condition_failed(exc):
                return None
            raise
        return from_item(response["Attributes"])

    async def release(self, name: str, owner: str, record: dict[str, Any] | None = None) -> None:
        """Give the lease back, if still ours (an expired-and-retaken one is not),
        setting the attributes in ``record`` on the item as it goes."""
        held = _LEASE.held_by(owner)
        removal = _LEASE.removal()
        sets = ", ".join(f"#{k} = :{k}" for k in record or {})
        try:
            await self._db.update_item(
                TableName=self.table,
                Key=to_item({"name": name}),
                UpdateExpression=f"REMOVE {removal.text}" + (f" SET {sets}" if sets else ""),
                ConditionExpression=held.text,
                ExpressionAttributeNames={
                    **held.names,
                    **removal.names,
                    **{f"#{k}": k for k in record or {}},
                },
                ExpressionAttributeValues=values(
                    {**held.values, **{f":{k}": v for k, v in (record or {}).items()}}
                ),
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise
