"""Change detection and the stability rule (S2, S4), decided per file from
its own state: no watermark, a time that lost precision is no change, a
file is fetched only once it has settled and is old enough."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor_shared.config import validate_routes
from conveyor_shared.config.sources import ProviderSource
from conveyor_shared.ledger.dynamo import iso_time
from conveyor_shared.ledger.received import Look, PathState, PathStatus
from conveyor_shared.sync.detect import (
    ASK_AGAIN_AFTER,
    Precision,
    Verdict,
    decide,
    look_of,
    precision_of,
    same_listing,
)
from conveyor_shared.sync.remote import FtpSources
from conveyor_shared.transfer.protocols import ObjectInfo

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


def source(**fields: Any) -> ProviderSource:
    spec = {
        "id": "acme",
        "name": "Acme",
        "partner_id": "H1234",
        "protocol": "ftp",
        "host": "ftp.acme.example",
        "username": "conveyor",
        "credentials": {"secret": "acme"},
        "landing": "s3://provider-landing/acme/",
        "audience": "process",
        **fields,
    }
    return validate_routes({"sources": [spec]}).sources[0]


def info(path: str = "a.csv", size: int = 10, modified: datetime | None = None) -> ObjectInfo:
    return ObjectInfo(path, size, modified or NOW - timedelta(hours=1, seconds=7))


def state(
    listed: ObjectInfo,
    *,
    looked: timedelta = timedelta(minutes=5),
    stored: ObjectInfo | None = None,
    requested: timedelta | None = None,
    status: PathStatus = PathStatus.PRESENT,
) -> PathState:
    return PathState(
        source="acme",
        path=listed.path,
        status=status,
        look=look_of(listed),
        looked_at=iso_time(NOW - looked),
        stored=look_of(stored) if stored else None,
        fetch_requested_at=iso_time(NOW - requested) if requested else None,
    )


def verdict(
    src: ProviderSource, listed: ObjectInfo, known: PathState | None, *names: str
) -> Verdict:
    everything = frozenset({listed.path, *names})
    return decide(src, listed, known, everything, NOW).verdict


def test_precision_read_off_the_time() -> None:
    assert (
        precision_of(info(modified=datetime(2026, 1, 1, 10, 5, 7, tzinfo=UTC))) is Precision.SECOND
    )
    assert precision_of(info(modified=datetime(2026, 1, 1, 10, 5, tzinfo=UTC))) is Precision.MINUTE
    assert precision_of(info(modified=datetime(2025, 6, 1, tzinfo=UTC))) is Precision.DAY


def test_a_time_that_lost_precision_is_no_change() -> None:
    mlsd = look_of(info(modified=datetime(2025, 6, 1, 14, 33, 21, tzinfo=UTC)))
    recent_list = look_of(info(modified=datetime(2025, 6, 1, 14, 33, tzinfo=UTC)))
    old_list = look_of(info(modified=datetime(2025, 6, 1, tzinfo=UTC)))
    assert same_listing(mlsd, recent_list)
    assert same_listing(mlsd, old_list)
    later = look_of(info(modified=datetime(2025, 6, 1, 14, 34, tzinfo=UTC)))
    assert not same_listing(mlsd, later)
    assert not same_listing(mlsd, Look(size=11, modified=mlsd.modified, precision="second"))


def test_the_backend_s_stated_precision_wins() -> None:
    listed = ObjectInfo(
        "a.csv",
        1,
        datetime(2025, 6, 1, 14, 33, tzinfo=UTC),
        modified_precision=timedelta(seconds=60),
    )
    assert precision_of(listed) is Precision.MINUTE
    midnight = ObjectInfo(
        "a.csv", 1, datetime(2025, 6, 1, tzinfo=UTC), modified_precision=timedelta(0)
    )
    assert precision_of(midnight) is Precision.SECOND


def test_listed_local_times_reach_the_ftp_backend_as_its_offset() -> None:
    settings = FtpSources.settings(source(time_zone="-05:00"))
    assert settings.time_zone == "-05:00"
    assert settings.zone.utcoffset(None) == timedelta(hours=-5)
    assert FtpSources.settings(source()).time_zone == "+00:00"


def test_new_file_waits_to_settle_then_is_fetched() -> None:
    src = source()
    listed = info()
    first = decide(src, listed, None, frozenset({"a.csv"}), NOW)
    assert (first.verdict, first.new_look) == (Verdict.WAIT, True)
    assert verdict(src, listed, state(listed, looked=timedelta(seconds=30))) is Verdict.WAIT
    assert verdict(src, listed, state(listed, looked=timedelta(seconds=61))) is Verdict.FETCH


def test_a_file_that_changed_since_the_last_look_starts_settling_again() -> None:
    src = source()
    known = state(info(size=10), looked=timedelta(minutes=10))
    changed = decide(src, info(size=20), known, frozenset({"a.csv"}), NOW)
    assert (changed.verdict, changed.new_look) == (Verdict.WAIT, True)


def test_min_age() -> None:
    src = source(stability={"settle_seconds": 0, "min_age_seconds": 600})
    assert verdict(src, info(modified=NOW - timedelta(seconds=300)), None) is Verdict.WAIT
    assert verdict(src, info(modified=NOW - timedelta(seconds=900)), None) is Verdict.FETCH


def test_unchanged_files_and_old_times_copied_in() -> None:
    src = source()
    listed = info()
    assert verdict(src, listed, state(listed, stored=listed)) is Verdict.UNCHANGED
    # No watermark: a file with a time older than everything stored is still new.
    ancient = info(path="b.csv", modified=datetime(2001, 1, 1, 8, 0, 1, tzinfo=UTC))
    assert verdict(src, ancient, None) is Verdict.WAIT


def test_a_file_back_after_deletion_is_looked_at_anew() -> None:
    listed = info()
    gone = state(listed, stored=listed, status=PathStatus.SOURCE_DELETED)
    back = decide(source(), listed, gone, frozenset({"a.csv"}), NOW)
    assert (back.verdict, back.new_look) == (Verdict.WAIT, True)


def test_a_requested_fetch_is_not_asked_for_twice_until_it_is_overdue() -> None:
    src = source()
    listed = info()
    asked = state(listed, requested=timedelta(minutes=1))
    assert verdict(src, listed, asked) is Verdict.REQUESTED
    overdue = state(listed, looked=ASK_AGAIN_AFTER * 2, requested=ASK_AGAIN_AFTER * 2)
    assert verdict(src, listed, overdue) is Verdict.FETCH


def test_temporary_names_and_done_markers() -> None:
    src = source(stability={"settle_seconds": 0, "done_marker": "{name}.done"})
    assert verdict(src, info("a.csv.part"), None) is Verdict.IGNORE
    assert verdict(src, info("a.csv"), None) is Verdict.IGNORE, "no marker yet"
    assert verdict(src, info("a.csv"), None, "a.csv.done") is Verdict.FETCH
    assert verdict(src, info("a.csv.done"), None, "a.csv") is Verdict.IGNORE
    folder = source(stability={"settle_seconds": 0, "done_marker": "_SUCCESS"}, recursive=True)
    assert verdict(folder, info("day/a.csv"), None, "day/_SUCCESS") is Verdict.FETCH
    assert verdict(folder, info("other/a.csv"), None, "day/_SUCCESS") is Verdict.IGNORE
