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
    return encode_json(last_key)


def invalid_cursor() -> ProblemError:
    """What a cursor that is not one of ours answers."""
    return ProblemError(400, "Invalid cursor", "pass back a nextCursor exactly as given")


def encode_json(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, sort_keys=True).encode()).decode()


def decode_json(cursor: str) -> Any:
    """A cursor's JSON; a 400 if it is not base64 JSON."""
    try:
        return json.loads(base64.urlsafe_b64decode(cursor.encode() + b"=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeError):
        raise invalid_cursor() from None


def is_string_key(value: Any, attributes: frozenset[str]) -> bool:
    """A DynamoDB key of non-empty string attributes, all among ``attributes``."""
    return (
        isinstance(value, dict)
        and bool(value)
        and set(value) <= attributes
        and all(
            isinstance(typed, dict)
            and set(typed) == {"S"}
            and isinstance(typed["S"], str)
            and bool(typed["S"])
            for typed in value.values()
        )
    )


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    value = decode_json(cursor)
    if not is_string_key(value, _KEY_ATTRIBUTES):
        raise invalid_cursor()
    return dict(value)
