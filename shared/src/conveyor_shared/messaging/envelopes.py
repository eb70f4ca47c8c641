"""The one place where raw queue bodies become typed messages.

A body may be one of our own messages, the same wrapped in an SNS envelope
(non-raw subscription), or an S3 event notification. Anything else is a
``MalformedMessage``: the consumer logs it and lets it go to the dead-letter
queue rather than crashing or retrying it forever.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

from pydantic import BaseModel, TypeAdapter, ValidationError

from conveyor_shared.messaging.models import (
    Command,
    Event,
    S3Notification,
    S3ObjectCreated,
    S3TestEvent,
)


class MalformedMessage(ValueError):
    """A body that no model accepts; the message says why, without echoing secrets."""


_COMMANDS: TypeAdapter[Any] = TypeAdapter(Command)
_EVENTS: TypeAdapter[Any] = TypeAdapter(Event)


def _load_json(body: str) -> Any:
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise MalformedMessage(f"body is not JSON ({exc.msg} at {exc.pos})") from None


def _unwrap_sns(document: Any) -> Any:
    if isinstance(document, dict) and document.get("Type") == "Notification":
        return _load_json(str(document.get("Message", "")))
    return document


def _s3_record(record: dict[str, Any]) -> S3ObjectCreated | None:
    name = str(record.get("eventName", ""))
    if not name.startswith("ObjectCreated:"):
        return None
    s3 = record["s3"]
    obj = s3["object"]
    return S3ObjectCreated(
        bucket=s3["bucket"]["name"],
        # S3 URL-encodes keys in notifications, with '+' for a space.
        key=unquote_plus(obj["key"]),
        size=obj.get("size"),
        etag=(obj.get("eTag") or "").strip('"') or None,
        sequencer=obj.get("sequencer"),
        event_name=name,
        event_time=record.get("eventTime"),
    )


def _parse_s3(document: dict[str, Any]) -> S3Notification | S3TestEvent:
    if document.get("Event") == "s3:TestEvent":
        return S3TestEvent(bucket=document.get("Bucket"))
    records = []
    try:
        for record in document["Records"]:
            parsed = _s3_record(record)
            if parsed is not None:
                records.append(parsed)
    except (KeyError, TypeError, ValidationError) as exc:
        raise MalformedMessage(f"S3 notification record is malformed: {exc!r}") from None
    return S3Notification(records=records)


def parse_body(body: str) -> BaseModel:
    """Parse a queue body into a command, an event or an S3 notification."""
    document = _unwrap_sns(_load_json(body))
    if not isinstance(document, dict):
        raise MalformedMessage(f"expected a JSON object, got {type(document).__name__}")
    if "Records" in document or document.get("Event") == "s3:TestEvent":
        return _parse_s3(document)
    kind = document.get("kind")
    adapter = _EVENTS if isinstance(kind, str) and kind.startswith(("job.", "file.")) else _COMMANDS
    try:
        message: BaseModel = adapter.validate_python(document)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False)
        )
        raise MalformedMessage(f"unknown or invalid message (kind={kind!r}): {reasons}") from None
    return message
