"""Opaque page cursors: DynamoDB's ``LastEvaluatedKey``, URL-safe base64 JSON.

A cursor carries only key attributes of the files table and its indexes; a
tampered one is a 400, never a 500."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from conveyor_api.problems import ProblemError

#: Every key attribute of the files table and its indexes.
_KEY_ATTRIBUTES = frozenset({"clientId", "contentId", "timestamp", "status", "jobId"})


def encode_cursor(last_key: dict[str, Any] | None) -> str | None:
    if not last_key:
        return None
    return base64.urlsafe_b64encode(json.dumps(last_key, sort_keys=True).encode()).decode()


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    bad = ProblemError(400, "Invalid cursor", "pass back a nextCursor exactly as given")
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode() + b"=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeError):
        raise bad from None
    if not isinstance(value, dict) or not value or not set(value) <= _KEY_ATTRIBUTES:
        raise bad
    for typed in value.values():
        if not (isinstance(typed, dict) and set(typed) == {"S"} and isinstance(typed["S"], str)):
            raise bad
        if not typed["S"]:
            raise bad
    return value
