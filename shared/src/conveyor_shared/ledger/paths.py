"""Destination paths in the locks table: who is delivering to a path right now,
and how new the newest upload sent there was.

Two uploads of one pick-up key are two files (two ledger entries) bound for
one destination path. Holding the path while a file goes there keeps their
bytes apart; remembering the newest upload that took the path (by the time
the scanner recorded it) keeps an older one, retried late, from landing over
a correction: a path only ever moves forward.

A delivered file does not give its path back: that would be a second write
for every file. The next upload of the key finds the path still held and
asks whether the holder's claim on its own file has ended (``HolderDone``,
one read, only when a key is sent again within a lease); if it has, it takes
the path over with a write conditional on that very holder.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from conveyor_shared.ledger.claims import Clause, Lease
from conveyor_shared.ledger.dynamo import condition_failed, epoch, from_item, to_item, values

#: How long a path remembers its newest upload after the last one.
_REMEMBER_SECONDS = 90 * 86400
_LEASE = Lease(owner="owner", expires="expiresAt")

#: Whether the claim ``owner`` made on file ``holder`` (``client/content``) has ended.
HolderDone = Callable[[str, str], Awaitable[bool]]


@dataclass(frozen=True)
class PathHold:
    #: Whether the path is ours now.
    held: bool
    #: When the newest upload that took this path was recorded, if newer than ours.
    superseded_by: str | None = None


class DestinationPaths:
    def __init__(self, client: Any, table: str, holder_done: HolderDone) -> None:
        self._db = client
        self.table = table
        self._holder_done = holder_done

    async def hold(
        self, name: str, owner: str, seconds: int, holder: str, recorded: str
    ) -> PathHold:
        """Take or renew path ``name`` for ``seconds`` for the file ``holder``,
        recorded at ``recorded``."""
        old = await self._take(name, owner, seconds, holder, recorded)
        if old is None:
            return PathHold(True)
        newest = old.get("newestTaken")
        if newest is not None and newest > recorded:
            return PathHold(False, superseded_by=str(newest))
        previous, previous_owner = old.get("holder"), old.get("owner")
        if previous and previous_owner and await self._holder_done(previous, previous_owner):
            taken_over = await self._take(
                name, owner, seconds, holder, recorded, after=str(previous_owner)
            )
            return PathHold(taken_over is None)
        return PathHold(False)

    async def _take(
        self,
        name: str,
        owner: str,
        seconds: int,
        holder: str,
        recorded: str,
        after: str | None = None,
    ) -> dict[str, Any] | None:
        """None if taken; else the item as it was (the condition failed)."""
        now = epoch()
        takeable = Clause("attribute_not_exists(#n)", {"#n": "name"}) | _LEASE.takeable_by(
            owner, now
        )
        if after is not None:
            takeable = takeable | Clause("#owner = :after", {"#owner": "owner"}, {":after": after})
        condition = takeable & Clause(
            "attribute_not_exists(newestTaken) OR newestTaken <= :recorded",
            values={":recorded": recorded},
        )
        take = _LEASE.assign(owner, seconds)
        try:
            await self._db.update_item(
                TableName=self.table,
                Key=to_item({"name": name}),
                UpdateExpression=f"SET {take.text}, holder = :holder, newestTaken = :recorded, "
                "#ttl = :ttl",
                ConditionExpression=condition.text,
                ExpressionAttributeNames={**condition.names, **take.names, "#ttl": "ttl"},
                ExpressionAttributeValues=values(
                    {
                        **condition.values,
                        **take.values,
                        ":holder": holder,
                        ":ttl": now + seconds + _REMEMBER_SECONDS,
                    }
                ),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if condition_failed(exc):
                old: dict[str, Any] = exc.response.get("Item") or {}  # type: ignore[assignment]
                return from_item(old)
            raise
        return None

    async def release(self, name: str, owner: str) -> None:
        """Give the path back, if still ours, after a file that was not delivered
        (its retry, or the next upload, need not wait for the lease)."""
        held = _LEASE.held_by(owner)
        removal = _LEASE.removal()
        try:
            await self._db.update_item(
                TableName=self.table,
                Key=to_item({"name": name}),
                UpdateExpression=f"REMOVE {removal.text}",
                ConditionExpression=held.text,
                ExpressionAttributeNames={**held.names, **removal.names},
                ExpressionAttributeValues=values(held.values),
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise
