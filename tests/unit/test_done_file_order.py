"""Which files a ``.done`` takes, by arrival order (D3): the S3 event's
millisecond ``eventTime`` where it was seen, else ``LastModified`` where its
second is clear, else undecided (the scanner waits for the event)."""

from __future__ import annotations

from datetime import UTC, datetime

from conveyor_scanner.arrivals import Arrival
from conveyor_scanner.done_files import Listed, _before_done

DONE_MODIFIED = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
DONE_AT = "2026-12-01T10:00:00.500Z"


def listed(second: int, etag: str = "e1") -> Listed:
    return Listed("H1234/a.csv", etag, DONE_MODIFIED.replace(second=second))


def test_an_arrival_10_ms_after_the_done_waits() -> None:
    after = Arrival("e1", "2026-12-01T10:00:00.510Z")
    assert _before_done(listed(0), after, DONE_AT, DONE_MODIFIED) is False


def test_an_arrival_before_the_done_is_taken() -> None:
    before = Arrival("e1", "2026-12-01T10:00:00.490Z")
    assert _before_done(listed(0), before, DONE_AT, DONE_MODIFIED) is True


def test_without_its_event_the_second_decides_when_it_is_clear() -> None:
    assert _before_done(listed(0), None, DONE_AT, DONE_MODIFIED.replace(second=1)) is True
    assert _before_done(listed(1), None, DONE_AT, DONE_MODIFIED) is False
    assert _before_done(listed(0), None, DONE_AT, DONE_MODIFIED) is None


def test_an_event_for_another_upload_of_the_key_does_not_count() -> None:
    older_upload = Arrival("e0", "2026-12-01T10:00:00.100Z")
    assert _before_done(listed(0, etag="e1"), older_upload, DONE_AT, DONE_MODIFIED) is None


def test_without_the_done_files_event_the_seconds_decide() -> None:
    assert _before_done(listed(0), None, None, DONE_MODIFIED) is True
    assert _before_done(listed(1), None, None, DONE_MODIFIED) is False
