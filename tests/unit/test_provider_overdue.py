"""A source is overdue after three of its intervals without a good poll."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conveyor_provider_sync.overdue import is_overdue
from conveyor_shared.config import validate_routes
from conveyor_shared.config.sources import ProviderSource
from tests.unit.test_provider_sources_config import source

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def every(minutes: int) -> ProviderSource:
    return validate_routes({"sources": [source(schedule_minutes=minutes)]}).sources[0]


def ago(minutes: float) -> str:
    return (NOW - timedelta(minutes=minutes)).isoformat()


def test_overdue_after_three_intervals_without_a_good_poll() -> None:
    quarterly = every(15)
    assert not is_overdue(quarterly, ago(1), NOW)
    assert not is_overdue(quarterly, ago(45), NOW), "three intervals exactly: still on time"
    assert is_overdue(quarterly, ago(45.1), NOW)
    assert is_overdue(every(10), ago(31), NOW), "the source's own interval counts"
    assert not is_overdue(every(60), ago(31), NOW)


def test_a_source_never_polled_is_overdue() -> None:
    assert is_overdue(every(15), None, NOW)
