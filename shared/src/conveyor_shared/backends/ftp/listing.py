"""Directory listings: MLSD facts (RFC 3659), and LIST lines in the Unix
``ls -l`` and DOS/IIS formats, each entry with how exact its time is.

A LIST time is in the server's zone (``zone``); ``Dec 02 02:17`` has no
year (the most recent such date not after tomorrow) nor seconds (precision
one minute), ``Dec 02 2025`` no time of day (precision one day). MLSD and
MDTM times are UTC to the second or better.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal

from conveyor_shared.errors import TransientError

EntryType = Literal["file", "dir", "link", "other"]

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)

_UNIX_TYPES: dict[str, EntryType] = {"-": "file", "d": "dir", "l": "link"}
_MONTHS = {
    m: n
    for n, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
_UNIX = re.compile(
    r"^(?P<type>[-dlcbps])[-rwxsStTlL]{9}[.+@]?\s+\d+\s+.*?\s"
    r"(?P<size>\d+)\s+(?P<month>[A-Za-z]{3})\s+(?P<day>\d{1,2})\s+"
    r"(?:(?P<hour>\d{1,2}):(?P<minute>\d{2})|(?P<year>\d{4})) (?P<name>.+)$"
)
_DOS = re.compile(
    r"^(?P<month>\d{2})-(?P<day>\d{2})-(?P<year>\d{2}|\d{4})\s+"
    r"(?P<hour>\d{1,2}):(?P<minute>\d{2})(?P<ampm>[AaPp][Mm])?\s+"
    r"(?:(?P<dir><DIR>)|(?P<size>\d+))\s+(?P<name>.+)$"
)


@dataclass(frozen=True)
class Entry:
    name: str
    type: EntryType
    size: int | None
    modified: datetime | None
    #: None: exact to the second or better.
    precision: timedelta | None = None


class UnparsedListing(TransientError):
    """The server sent listing lines and none could be read: an unknown
    format, not an empty directory. Retryable: the server may answer
    differently on another session; the message quotes a line."""


def mlsx_time(value: str) -> datetime | None:
    """``YYYYMMDDHHMMSS[.sss]`` (MLSD's ``modify``, MDTM's reply) in UTC."""
    match = re.match(r"^(\d{14})(?:\.(\d{1,6}))?$", value.strip())
    if not match:
        return None
    try:
        moment = datetime.strptime(match[1], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    if match[2]:
        moment += timedelta(microseconds=int(match[2].ljust(6, "0")))
    return moment


def parse_mlsd_line(line: str) -> Entry | None:
    """One MLSD line (``fact=value;...; name``), or None when it is not one."""
    facts_text, space, name = line.partition(" ")
    if not space or not name or "=" not in facts_text:
        return None
    facts = {}
    for fact in facts_text.split(";"):
        key, equals, value = fact.partition("=")
        if equals:
            facts[key.strip().lower()] = value
    kind = facts.get("type", "").lower()
    entry_type: EntryType
    if kind == "file":
        entry_type = "file"
    elif kind == "dir":
        entry_type = "dir"
    elif kind in {"cdir", "pdir"}:
        entry_type = "other"  # the directory itself and its parent
    elif "slink" in kind or kind.startswith("os.unix=symlink"):
        entry_type = "link"
    else:
        entry_type = "other"
    size = facts.get("size") or facts.get("sizd")
    modified = mlsx_time(facts["modify"]) if "modify" in facts else None
    return Entry(name, entry_type, int(size) if size and size.isdigit() else None, modified)


def _recent_year(month: int, day: int, now: datetime) -> int:
    """``ls`` drops the year for dates within about six months: the latest
    year that puts the date no later than tomorrow."""
    year = now.year
    if (month, day) > ((now + DAY).month, (now + DAY).day):
        year -= 1
    return year


def parse_unix_line(line: str, zone: tzinfo, now: datetime) -> Entry | None:
    match = _UNIX.match(line)
    if not match:
        return None
    month = _MONTHS.get(match["month"].lower())
    if month is None:
        return None
    day = int(match["day"])
    name = match["name"]
    entry_type = _UNIX_TYPES.get(match["type"], "other")
    if entry_type == "link":
        name = name.split(" -> ", 1)[0]
    try:
        if match["year"]:
            modified = datetime(int(match["year"]), month, day, tzinfo=zone)
            precision = DAY
        else:
            year = _recent_year(month, day, now.astimezone(zone))
            hour, minute = int(match["hour"]), int(match["minute"])
            modified = datetime(year, month, day, hour, minute, tzinfo=zone)
            precision = MINUTE
    except ValueError:
        return None
    return Entry(name, entry_type, int(match["size"]), modified.astimezone(UTC), precision)


def parse_dos_line(line: str, zone: tzinfo) -> Entry | None:
    match = _DOS.match(line)
    if not match:
        return None
    year = int(match["year"])
    if year < 100:
        year += 2000 if year < 70 else 1900
    hour = int(match["hour"])
    if match["ampm"]:
        hour = hour % 12 + (12 if match["ampm"].lower() == "pm" else 0)
    try:
        modified = datetime(
            year, int(match["month"]), int(match["day"]), hour, int(match["minute"]), tzinfo=zone
        )
    except ValueError:
        return None
    if match["dir"]:
        return Entry(match["name"], "dir", None, modified.astimezone(UTC), MINUTE)
    return Entry(match["name"], "file", int(match["size"]), modified.astimezone(UTC), MINUTE)


def parse_list_line(line: str, zone: tzinfo, now: datetime) -> Entry | None:
    return parse_unix_line(line, zone, now) or parse_dos_line(line, zone)


def _noise(line: str) -> bool:
    """Lines a LIST may carry that are no entry: blank, ``total 12``."""
    return not line.strip() or bool(re.match(r"^total \d+$", line.strip()))


def parse_listing(
    lines: Iterable[str],
    *,
    mlsd: bool,
    zone: tzinfo = UTC,
    now: datetime | None = None,
    what: str = "listing",
) -> list[Entry]:
    """Every entry in a directory listing, ``.`` and ``..`` left out.

    Raises ``UnparsedListing`` when there were lines and not one parsed.
    """
    now = now or datetime.now(UTC)
    entries: list[Entry] = []
    parsed = 0
    unparsed: list[str] = []
    for line in lines:
        if _noise(line):
            continue
        entry = parse_mlsd_line(line) if mlsd else parse_list_line(line, zone, now)
        if entry is None:
            unparsed.append(line)
            continue
        parsed += 1
        if entry.name not in {".", ".."}:
            entries.append(entry)
    if unparsed and not parsed:
        raise UnparsedListing(
            f"{what}: none of the {len(unparsed)} lines the server sent could be read "
            f"as {'MLSD' if mlsd else 'LIST'} entries (first: {unparsed[0][:120]!r})"
        )
    return entries
