"""Small helpers over the low-level DynamoDB client: typed values in and out,
and the one check every conditional write needs."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def now_iso() -> str:
    """UTC time with milliseconds, sortable as a string."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch() -> int:
    return int(datetime.now(UTC).timestamp())


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def values(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """``ExpressionAttributeValues`` from plain Python values."""
    return {k: _serializer.serialize(v) for k, v in mapping.items()}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    plain = {k: _deserializer.deserialize(v) for k, v in item.items()}
    return {k: int(v) if isinstance(v, Decimal) and v == int(v) else v for k, v in plain.items()}


def condition_failed(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code")
    return code in {"ConditionalCheckFailedException", "TransactionCanceledException"}
