"""When a person last looked at the received files, for "new since your last
visit", kept per key in the locks table (``web-visit/<key id>``) so it holds
across browsers, sign-ins and replicas.

A visit lasts ``VISIT_SECONDS``: pages seen within it compare with the visit
before, so reloading does not clear the marks. Starting a visit is one
conditional update (``current`` is still what was read), so two pages loaded
at once start it once.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from conveyor_shared.ledger.dynamo import (
    condition_failed,
    from_item,
    now_iso,
    older_than,
    to_item,
    values,
)

VISIT_SECONDS = 30 * 60


async def last_visit(db: Any, table: str, key_id: str) -> str | None:
    """The start of the visit before this one (None on a first visit), starting
    a new visit when the last one is over. ``table`` is the locks table."""
    key = to_item({"name": f"web-visit/{key_id}"})
    response = await db.get_item(TableName=table, Key=key, ConsistentRead=True)
    item = from_item(response.get("Item") or {})
    current: str | None = item.get("current")
    if current is not None and not older_than(current, VISIT_SECONDS):
        previous: str | None = item.get("previous")
        return previous
    update: dict[str, Any] = {
        "TableName": table,
        "Key": key,
        "UpdateExpression": "SET #current = :now, previous = :previous",
        "ExpressionAttributeNames": {"#current": "current"},
    }
    if current is None:
        update["ConditionExpression"] = "attribute_not_exists(#current)"
        update["ExpressionAttributeValues"] = values({":now": now_iso(), ":previous": None})
    else:
        update["ConditionExpression"] = "#current = :seen"
        update["ExpressionAttributeValues"] = values(
            {":now": now_iso(), ":previous": current, ":seen": current}
        )
    try:
        await db.update_item(**update)
    except ClientError as exc:
        if not condition_failed(exc):
            raise
        # Another page started this visit a moment ago; its "before" is ours too.
    return current
