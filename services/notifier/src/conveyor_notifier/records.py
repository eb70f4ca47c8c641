"""The notifier's idempotency record: one item per notification in the
``<stack>-notifications`` table, so that redelivered events, restarts and
several notifier replicas send each notification once.

State machine of one record (``id`` names the notification, e.g.
``H1234-20261121T101500Z-3f9a1c#job.finished``):

    (none) --claim--> claimed(owner, lease) --mark_sent--> sent
    claimed --release (send failed)--> (none)
    claimed, lease expired --claim by anyone--> claimed(new owner)

The lease rule is the one every claim in Conveyor follows
(``conveyor_shared.ledger.claims``). Here ``owner`` is the SQS message id,
not a token per claim: a send takes seconds, far less than the message's
visibility timeout, so the same message id is never in two live receivers,
and a crashed sender's redelivered message reclaims at once instead of
waiting out the lease. A different message for the same notification (an
SNS duplicate, a republished event) sees ``HELD`` and comes back later.

The one window in which a notification can be sent twice: the send
succeeded, then the process died before ``mark_sent``. The redelivered
message reclaims its own record and sends again. Everything else (a crash
before or during the send, a failed send, a duplicate event) sends once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from conveyor_shared.ledger.claims import Clause, Lease
from conveyor_shared.ledger.dynamo import condition_failed, epoch, from_item, now_iso, to_item
from conveyor_shared.ledger.dynamo import values as bind

#: The lease rule every claim in Conveyor follows, on this table's attributes.
_LEASE = Lease(owner="owner", expires="leaseExpires")


class ClaimState(enum.Enum):
    #: Ours to send now.
    CLAIMED = "claimed"
    #: Already sent: nothing to do.
    SENT = "sent"
    #: Another live worker is sending it.
    HELD = "held"


def _claimed() -> Clause:
    return Clause("#s = :claimed", {"#s": "state"}, {":claimed": ClaimState.CLAIMED.value})


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    #: For ``HELD``: seconds until the other worker's lease runs out.
    expires_in: int = 0


class NotificationRecords:
    def __init__(
        self, client: Any, table: str, lease_seconds: int, retention_days: int = 90
    ) -> None:
        self._db = client
        self.table = table
        self._lease = lease_seconds
        self._retention = retention_days * 86400

    async def claim(self, key: str, owner: str, what: str = "") -> Claim:
        """Claim notification ``key`` for ``owner`` unless it was sent or another
        owner's lease is live."""
        for _ in range(3):
            now = epoch()
            condition = Clause("attribute_not_exists(id)") | (
                _claimed() & _LEASE.takeable_by(owner, now)
            )
            try:
                await self._db.put_item(
                    TableName=self.table,
                    Item=to_item(
                        {
                            "id": key,
                            "state": ClaimState.CLAIMED.value,
                            "owner": owner,
                            "leaseExpires": now + self._lease,
                            "claimedAt": now_iso(),
                            "what": what or None,
                            "ttl": now + self._retention,
                        }
                    ),
                    ConditionExpression=condition.text,
                    ExpressionAttributeNames=condition.names,
                    ExpressionAttributeValues=bind(condition.values),
                )
            except ClientError as exc:
                if not condition_failed(exc):
                    raise
            else:
                return Claim(ClaimState.CLAIMED)
            current = await self.get(key)
            if current is None:
                continue  # released between our put and our read: try again
            if current["state"] == ClaimState.SENT.value:
                return Claim(ClaimState.SENT)
            return Claim(ClaimState.HELD, max(1, int(current["leaseExpires"]) - now))
        return Claim(ClaimState.HELD, 1)

    async def mark_sent(self, key: str, owner: str, receipt: str | None) -> bool:
        """Record that ``owner`` sent ``key``; False if its claim was lost meanwhile."""
        held = _claimed() & _LEASE.held_by(owner)
        try:
            await self._db.update_item(
                TableName=self.table,
                Key=to_item({"id": key}),
                UpdateExpression="SET #s = :sent, sentAt = :at, receipt = :receipt "
                "REMOVE leaseExpires",
                ConditionExpression=held.text,
                ExpressionAttributeNames=held.names,
                ExpressionAttributeValues=bind(
                    {
                        **held.values,
                        ":sent": ClaimState.SENT.value,
                        ":at": now_iso(),
                        ":receipt": receipt or "",
                    }
                ),
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    async def release(self, key: str, owner: str) -> None:
        """Give up ``owner``'s claim after a failed send, so the retry need not
        wait for the lease. A claim already lost or sent is left alone."""
        held = _claimed() & _LEASE.held_by(owner)
        try:
            await self._db.delete_item(
                TableName=self.table,
                Key=to_item({"id": key}),
                ConditionExpression=held.text,
                ExpressionAttributeNames=held.names,
                ExpressionAttributeValues=bind(held.values),
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise

    async def get(self, key: str) -> dict[str, Any] | None:
        response = await self._db.get_item(
            TableName=self.table, Key=to_item({"id": key}), ConsistentRead=True
        )
        item = response.get("Item")
        return from_item(item) if item else None

    # --- dead-letter counts ---------------------------------------------------------------

    async def dead_letters_reported(self, queue: str) -> int:
        """How many dead letters in ``queue`` operators were last told of."""
        item = await self.get(f"dead-letters#{queue}")
        return int(item["reported"]) if item else 0

    async def move_dead_letters_reported(self, queue: str, old: int, new: int) -> bool:
        """Change the reported count from ``old`` to ``new``; False if another
        notifier changed it first (it then sends the alert, not us)."""
        now = epoch()
        try:
            await self._db.put_item(
                TableName=self.table,
                Item=to_item(
                    {
                        "id": f"dead-letters#{queue}",
                        "reported": new,
                        "changedAt": now_iso(),
                        "ttl": now + self._retention,
                    }
                ),
                ConditionExpression="attribute_not_exists(id) OR reported = :old",
                ExpressionAttributeValues=bind({":old": old}),
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True
