"""Named leases in DynamoDB (D10): at most one holder at a time, and a crashed
holder's lease expires on its own. The rule is ``claims.Lease``'s, on the
``owner`` and ``expiresAt`` attributes of the locks table."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from conveyor_shared.ledger.claims import Clause, Lease
from conveyor_shared.ledger.dynamo import condition_failed, epoch, to_item, values

_LEASE = Lease(owner="owner", expires="expiresAt")


class Leases:
    def __init__(self, client: Any, table: str) -> None:
        self._db = client
        self.table = table

    async def acquire(self, name: str, owner: str, seconds: int) -> bool:
        """Take (or renew) lease ``name`` for ``seconds``; False if another holds it."""
        now = epoch()
        condition = Clause("attribute_not_exists(#n)", {"#n": "name"}) | _LEASE.takeable_by(
            owner, now
        )
        try:
            await self._db.put_item(
                TableName=self.table,
                Item=to_item(
                    {
                        "name": name,
                        "owner": owner,
                        "expiresAt": now + seconds,
                        "ttl": now + seconds + 86400,
                    }
                ),
                ConditionExpression=condition.text,
                ExpressionAttributeNames=condition.names,
                ExpressionAttributeValues=values(condition.values),
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    async def release(self, name: str, owner: str) -> None:
        """Give the lease back, if still ours (an expired-and-retaken one is not)."""
        held = _LEASE.held_by(owner)
        try:
            await self._db.delete_item(
                TableName=self.table,
                Key=to_item({"name": name}),
                ConditionExpression=held.text,
                ExpressionAttributeNames=held.names,
                ExpressionAttributeValues=values(held.values),
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise
