"""Small helpers over the low-level DynamoDB client: typed values in and out,
and the one check every conditional write needs."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def iso_time(when: datetime) -> str:
    """The ledger's time format: UTC with milliseconds, sortable as a string."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return iso_time(datetime.now(UTC))


def iso_ago(seconds: float) -> str:
    return iso_time(datetime.now(UTC) - timedelta(seconds=seconds))


def parse_iso(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def older_than(iso: str | None, seconds: float) -> bool:
    """Whether the ledger time ``iso`` is at least ``seconds`` ago (a missing one is)."""
    return iso is None or datetime.now(UTC) - parse_iso(iso) >= timedelta(seconds=seconds)


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
