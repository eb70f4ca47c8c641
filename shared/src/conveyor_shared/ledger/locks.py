"""Leases in DynamoDB (D10): at most one holder at a time, and a crashed
holder's lease expires on its own."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from conveyor_shared.ledger.dynamo import condition_failed, epoch, to_item, values


class Leases:
    def __init__(self, client: Any, table: str) -> None:
        self._db = client
        self.table = table

    async def acquire(self, name: str, owner: str, seconds: int) -> bool:
        """Take (or renew) lease ``name`` for ``seconds``; False if another holds it."""
        now = epoch()
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
                ConditionExpression="attribute_not_exists(#n) OR expiresAt < :now OR #o = :owner",
                ExpressionAttributeNames={"#n": "name", "#o": "owner"},
                ExpressionAttributeValues=values({":now": now, ":owner": owner}),
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    async def release(self, name: str, owner: str) -> None:
        """Give the lease back, if still ours (an expired-and-retaken one is not)."""
        try:
            await self._db.delete_item(
                TableName=self.table,
                Key=to_item({"name": name}),
                ConditionExpression="#o = :owner",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues=values({":owner": owner}),
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise
