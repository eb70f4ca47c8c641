"""Change detection without watermarks (S2) and the stability rule (S4).

Each listed file is compared with its own state in the ledger, never with a
"newest timestamp" mark: a file copied in with an old time is still new. Size
or time differing says "maybe changed"; the SHA-256 of the copy decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum

from conveyor_shared.config.sources import ProviderSource
from conveyor_shared.ledger.dynamo import iso_time, parse_iso
from conveyor_shared.ledger.received import Look, PathState, PathStatus
from conveyor_shared.transfer.protocols import ObjectInfo

#: A fetch asked for and not recorded by then (its message reached the
#: dead-letter queue) is asked for again.
ASK_AGAIN_AFTER = timedelta(hours=1)


class Precision(StrEnum):
    """What part of a listed time the server vouched for: MLSD gives seconds,
    LIST minutes for recent files and only the day for older ones."""

    SECOND = "second"
    MINUTE = "minute"
    DAY = "day"


_COARSENESS = {Precision.SECOND: 0, Precision.MINUTE: 1, Precision.DAY: 2}


def precision_of(info: ObjectInfo) -> Precision:
    """The backend's word (``modified_precision``: an FTP LIST time is good
    to the minute or the day), else read off the time: none of seconds is
    taken as minutes, midnight as a day. Reading too coarse a precision only
    means a change within it is found by its size, or by the next listing."""
    stated = info.modified_precision
    if stated is not None:
        if stated >= timedelta(days=1):
            return Precision.DAY
        return Precision.MINUTE if stated >= timedelta(minutes=1) else Precision.SECOND
    when = info.modified
    if when is None or when.second or when.microsecond:
        return Precision.SECOND
    return Precision.DAY if when.hour == 0 and when.minute == 0 else Precision.MINUTE


def look_of(info: ObjectInfo) -> Look:
    """What the ledger keeps of a listed file. Backends give times in UTC
    (the FTP backend reads LIST times in the source's ``time_zone``); a time
    without a zone is taken as UTC, a missing one as the epoch."""
    when = info.modified or datetime.fromtimestamp(0, UTC)
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return Look(size=info.size or 0, modified=iso_time(when), precision=precision_of(info))


def _truncate(when: datetime, precision: Precision) -> datetime:
    if precision is Precision.DAY:
        return when.replace(hour=0, minute=0, second=0, microsecond=0)
    if precision is Precision.MINUTE:
        return when.replace(second=0, microsecond=0)
    return when.replace(microsecond=0)


def same_listing(a: Look, b: Look, zone: tzinfo = UTC) -> bool:
    """Same size and the same time at the coarser of the two precisions: a
    time that lost precision (LIST after MLSD, or an older file) is no change.
    A day is the server's local day, so it is compared in the source's zone."""
    if a.size != b.size:
        return False
    coarser = max(Precision(a.precision), Precision(b.precision), key=_COARSENESS.__getitem__)
    ta, tb = parse_iso(a.modified).astimezone(zone), parse_iso(b.modified).astimezone(zone)
    return _truncate(ta, coarser) == _truncate(tb, coarser)


class Verdict(StrEnum):
    FETCH = "fetch"
    UNCHANGED = "unchanged"
    #: Not yet: first look, changed since the last look, too young.
    WAIT = "wait"
    #: Not this source's file: excluded, a temporary name, a done marker.
    IGNORE = "ignore"
    #: A fetch of this very look was asked for already.
    REQUESTED = "requested"


@dataclass(frozen=True)
class Decision:
    path: str
    verdict: Verdict
    reason: str
    look: Look
    #: The look must be recorded (a new file, or one that changed since the last look).
    new_look: bool = False


def ignored(source: ProviderSource, path: str, names: frozenset[str]) -> str | None:
    """Why ``path`` is not a file to copy, or None. ``names`` are every path
    in the listing, to find done markers."""
    rule = source.stability
    if not source.wants(path):
        return "not matched by include/exclude"
    name = path.rsplit("/", 1)[-1]
    if any(name.endswith(suffix) for suffix in rule.temp_suffixes):
        return "temporary name: still being written"
    if rule.done_marker is None:
        return None
    folder = path[: -len(name)]
    if "{name}" in rule.done_marker:
        prefix, _, suffix = rule.done_marker.partition("{name}")
        if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(rule.done_marker):
            return "a done marker"
        marker = rule.done_marker.replace("{name}", name)
    else:
        if name == rule.done_marker:
            return "a done marker"
        marker = rule.done_marker
    return None if folder + marker in names else f"waiting for done marker {marker}"


def decide(
    source: ProviderSource,
    info: ObjectInfo,
    state: PathState | None,
    names: frozenset[str],
    now: datetime,
) -> Decision:
    """What the poll does with one listed file."""
    look = look_of(info)
    if reason := ignored(source, info.path, names):
        return Decision(info.path, Verdict.IGNORE, reason, look)
    zone = source.zone
    if (
        state is not None
        and state.status is PathStatus.PRESENT
        and state.stored is not None
        and same_listing(look, state.stored, zone)
    ):
        return Decision(info.path, Verdict.UNCHANGED, "same size and time as stored", look)
    if state is None or state.status is not PathStatus.PRESENT:
        return Decision(info.path, *_first_look(source, look, now), look, new_look=True)
    if not same_listing(look, state.look, zone):
        return Decision(info.path, *_first_look(source, look, now), look, new_look=True)
    return _settled(source, info.path, look, state, now)


def _first_look(source: ProviderSource, look: Look, now: datetime) -> tuple[Verdict, str]:
    if source.stability.settle_seconds:
        return Verdict.WAIT, "first look at this size and time: waiting for it to settle"
    return _old_enough(source, look, now)


def _old_enough(source: ProviderSource, look: Look, now: datetime) -> tuple[Verdict, str]:
    age = now - parse_iso(look.modified)
    if age < timedelta(seconds=source.stability.min_age_seconds):
        return Verdict.WAIT, f"modified {int(age.total_seconds())} s ago: younger than min_age"
    return Verdict.FETCH, "new or changed, and settled"


def _settled(
    source: ProviderSource, path: str, look: Look, state: PathState, now: datetime
) -> Decision:
    waited = now - parse_iso(state.looked_at)
    if waited < timedelta(seconds=source.stability.settle_seconds):
        return Decision(
            path, Verdict.WAIT, f"settling: same for {int(waited.total_seconds())} s", look
        )
    verdict, reason = _old_enough(source, look, now)
    requested = state.fetch_requested_at
    if verdict is Verdict.FETCH and requested and now - parse_iso(requested) < ASK_AGAIN_AFTER:
        return Decision(path, Verdict.REQUESTED, "fetch already requested", look)
    return Decision(path, verdict, reason, look)
