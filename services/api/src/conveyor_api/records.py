"""What the API writes for itself, in the locks table: a record of every
operator action (who, when, why, what came of it; found by what it acted on
through the ``bySubject`` index), and the first response to each
``Idempotency-Key``. Both are conditional puts."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from botocore.exceptions import ClientError

from conveyor_api.auth import Caller
from conveyor_api.context import ApiContext
from conveyor_api.models import ActionRecord
from conveyor_shared.ledger.dynamo import condition_failed, epoch, from_item, now_iso, to_item

_SUBJECT_INDEX = "bySubject"


def file_subject(client_id: str, content_id: str) -> str:
    return f"file/{client_id}/{content_id}"


def job_subject(job_id: str) -> str:
    return f"job/{job_id}"


def new_action_id() -> str:
    return uuid.uuid4().hex


async def record_action(
    ctx: ApiContext,
    caller: Caller,
    *,
    action_id: str,
    kind: str,
    subjects: list[str],
    reason: str | None,
    outcome: str,
) -> None:
    """One item per subject, so each thing acted on lists the action in its history."""
    at = now_iso()
    for subject in dict.fromkeys(subjects):
        record = ActionRecord(
            action_id=action_id,
            kind=kind,
            subject=subject,
            at=at,
            by=caller.key_id,
            role=caller.role.value,
            reason=reason,
            outcome=outcome,
        )
        try:
            await ctx.db.put_item(
                TableName=ctx.names.locks_table,
                Item=to_item(
                    {"name": f"action/{action_id}/{subject}", **record.model_dump(by_alias=True)}
                ),
                ConditionExpression="attribute_not_exists(#n)",
                ExpressionAttributeNames={"#n": "name"},
            )
        except ClientError as exc:
            if not condition_failed(exc):  # already recorded by this same action's retry
                raise


async def actions_on(ctx: ApiContext, subject: str, limit: int = 100) -> list[ActionRecord]:
    """The newest ``limit`` actions taken on ``subject``, newest first."""
    response = await ctx.db.query(
        TableName=ctx.names.locks_table,
        IndexName=_SUBJECT_INDEX,
        KeyConditionExpression="subject = :subject",
        ExpressionAttributeValues={":subject": {"S": subject}},
        ScanIndexForward=False,
        Limit=limit,
    )
    return [ActionRecord.model_validate(from_item(i)) for i in response.get("Items", [])]


class IdempotencyRecords:
    """``Idempotency-Key``: the first request with a key runs; a retry with the
    same key and the same request gets the first response back.

    The first request claims the key with a conditional put (``pending``), so
    of two concurrent requests with one key only one runs; the other is told
    to retry (409). The response is stored on the same item when done. Keys
    are per caller, and kept ``idempotency_seconds`` (the table's TTL)."""

    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def _name(self, caller: Caller, key: str) -> str:
        digest = hashlib.sha256(f"{caller.key_id}\0{key}".encode()).hexdigest()
        return f"idempotency/{digest}"

    @staticmethod
    def fingerprint(method: str, path: str, body: Any) -> str:
        text = json.dumps([method, path, body], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    async def claim(self, caller: Caller, key: str, fingerprint: str) -> dict[str, Any] | None:
        """None if this request may run; else the stored item (done or pending)."""
        name = self._name(caller, key)
        try:
            await self._ctx.db.put_item(
                TableName=self._ctx.names.locks_table,
                Item=to_item(
                    {
                        "name": name,
                        "state": "pending",
                        "fingerprint": fingerprint,
                        "at": now_iso(),
                        "ttl": epoch() + self._ctx.settings.idempotency_seconds,
                    }
                ),
                ConditionExpression="attribute_not_exists(#n)",
                ExpressionAttributeNames={"#n": "name"},
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise
            response = await self._ctx.db.get_item(
                TableName=self._ctx.names.locks_table,
                Key=to_item({"name": name}),
                ConsistentRead=True,
            )
            return from_item(response.get("Item") or {"state": {"S": "pending"}})
        return None

    async def complete(self, caller: Caller, key: str, status: int, body: str) -> None:
        await self._ctx.db.update_item(
            TableName=self._ctx.names.locks_table,
            Key=to_item({"name": self._name(caller, key)}),
            UpdateExpression="SET #st = :done, responseStatus = :status, responseBody = :body",
            ConditionExpression="#st = :pending",
            ExpressionAttributeNames={"#st": "state"},
            ExpressionAttributeValues=to_item(
                {":done": "done", ":pending": "pending", ":status": status, ":body": body}
            ),
        )

    async def abandon(self, caller: Caller, key: str) -> None:
        """Free the key after a request that failed before acting, so a retry runs."""
        await self._ctx.db.delete_item(
            TableName=self._ctx.names.locks_table,
            Key=to_item({"name": self._name(caller, key)}),
            ConditionExpression="#st = :pending",
            ExpressionAttributeNames={"#st": "state"},
            ExpressionAttributeValues=to_item({":pending": "pending"}),
        )
