"""FTP listing parsers (MLSD, Unix and DOS/IIS LIST) and reply classification,
on lines as real servers send them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from conveyor_shared.backends.ftp.listing import (
    DAY,
    MINUTE,
    UnparsedListing,
    mlsx_time,
    parse_dos_line,
    parse_listing,
    parse_mlsd_line,
    parse_unix_line,
)
from conveyor_shared.backends.ftp.replies import Reply, ServerPathMissing, reply_error
from conveyor_shared.backends.ftp.settings import FtpSettings
from conveyor_shared.backends.ftp.upload import choose_hash, hash_in, offered_hashes
from conveyor_shared.errors import CredentialsRefused, NotFound, PermanentError, TransientError

NOW = datetime(2026, 12, 2, 2, 17, tzinfo=UTC)


def test_mlsd_file_with_fractional_time_and_spaces() -> None:
    entry = parse_mlsd_line("modify=20261202021711.250;perm=adfr;size=1;type=file; a b.txt")
    assert entry is not None
    assert (entry.name, entry.type, entry.size) == ("a b.txt", "file", 1)
    assert entry.modified == datetime(2026, 12, 2, 2, 17, 11, 250000, tzinfo=UTC)
    assert entry.precision is None


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("type=cdir;sizd=4096;modify=20261202021711;UNIX.mode=0777; .", "other"),
        ("type=pdir;modify=20261202021711; ..", "other"),
        ("type=dir;modify=20261202021711; in", "dir"),
        ("type=OS.unix=slink:/etc;modify=20261202021711; etc", "link"),
        ("Type=File;Size=9;Modify=20261202021711; upper.csv", "file"),
    ],
)
def test_mlsd_types(line: str, kind: str) -> None:
    entry = parse_mlsd_line(line)
    assert entry is not None
    assert entry.type == kind


@pytest.mark.parametrize(
    "line",
    [
        "-rw-r--r--    1 0        0               1 Dec 02 02:17 a b.txt",  # vsftpd
        "-rw-r--r--   1 0        0               1 Dec  2 02:17 a b.txt",  # proftpd
        "-rw-r--r--    1 0          0                   1 Dec  2 02:17 a b.txt",  # pure-ftpd
        "-rw-r--r--   1 root     root            1 Dec 02 02:17 a b.txt",  # pyftpdlib
        "-rw-r--r--+  1 owner with space grp      1 Dec 02 02:17 a b.txt",
    ],
)
def test_unix_lines_from_each_server(line: str) -> None:
    entry = parse_unix_line(line, UTC, NOW)
    assert entry is not None
    assert (entry.name, entry.type, entry.size) == ("a b.txt", "file", 1)
    assert entry.modified == datetime(2026, 12, 2, 2, 17, tzinfo=UTC)
    assert entry.precision == MINUTE, "a LIST time has no seconds"


def test_unix_time_without_year_is_the_latest_date_not_after_tomorrow() -> None:
    entry = parse_unix_line("-rw-r--r-- 1 u g 5 Dec 25 10:00 later.csv", UTC, NOW)
    assert entry is not None
    assert entry.modified is not None
    assert entry.modified.year == 2025, "25 December 2026 is in the future: last year's"


def test_unix_date_with_year_is_exact_to_the_day() -> None:
    entry = parse_unix_line("-rw-r--r-- 1 u g 5 Mar  1  2024 old.csv", UTC, NOW)
    assert entry is not None
    assert entry.modified == datetime(2024, 3, 1, tzinfo=UTC)
    assert entry.precision == DAY


def test_unix_times_are_moved_from_the_servers_zone() -> None:
    eastern = timezone(timedelta(hours=-5))
    entry = parse_unix_line("-rw-r--r-- 1 u g 5 Dec 01 21:17 local.csv", eastern, NOW)
    assert entry is not None
    assert entry.modified == datetime(2026, 12, 2, 2, 17, tzinfo=UTC)


def test_unix_links_and_directories() -> None:
    link = parse_unix_line("lrwxrwxrwx 1 u g 4 Dec 02 02:17 current -> 2026", UTC, NOW)
    folder = parse_unix_line("drwxr-xr-x 2 u g 4096 Dec 02 02:17 in bound", UTC, NOW)
    assert link is not None
    assert (link.name, link.type) == ("current", "link")
    assert folder is not None
    assert (folder.name, folder.type) == ("in bound", "dir")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("12-02-26  02:17AM                 1 a b.txt", ("a b.txt", "file", 1, 2)),
        ("12-02-2026  02:17PM       <DIR>          in bound", ("in bound", "dir", None, 14)),
        ("12-02-26  12:05AM                 7 midnight.csv", ("midnight.csv", "file", 7, 0)),
        ("12-02-26  14:17                   3 iis24h.csv", ("iis24h.csv", "file", 3, 14)),
    ],
)
def test_dos_iis_lines(line: str, expected: tuple[str, str, int | None, int]) -> None:
    entry = parse_dos_line(line, UTC)
    assert entry is not None
    assert entry.modified is not None
    assert (entry.name, entry.type, entry.size, entry.modified.hour) == expected
    assert entry.precision == MINUTE


def test_listing_skips_dot_entries_and_total_lines() -> None:
    lines = [
        "total 8",
        "drwxr-xr-x 2 0 0 4096 Dec 02 02:17 .",
        "drwxr-xr-x 2 0 0 4096 Dec 02 02:17 ..",
        "-rw-r--r-- 1 0 0    1 Dec 02 02:17 .hidden",
        "",
    ]
    assert [e.name for e in parse_listing(lines, mlsd=False, now=NOW)] == [".hidden"]


def test_a_directory_of_only_dot_entries_is_empty_not_unreadable() -> None:
    lines = ["type=cdir;modify=20261202021711; .", "type=pdir;modify=20261202021711; .."]
    assert parse_listing(lines, mlsd=True) == []


def test_lines_that_parse_to_nothing_are_an_error_not_an_empty_folder() -> None:
    with pytest.raises(UnparsedListing, match="none of the 2 lines") as raised:
        parse_listing(["+i8388621.29609,m824255902,/,\tdev", "weird"], mlsd=False, what="list x")
    assert isinstance(raised.value, TransientError)
    assert "list x" in str(raised.value)


def test_mdtm_times() -> None:
    assert mlsx_time("20261202021711") == datetime(2026, 12, 2, 2, 17, 11, tzinfo=UTC)
    assert mlsx_time("2026120202171") is None
    assert mlsx_time("20261302021711") is None


@pytest.mark.parametrize("code", [421, 425, 426, 450, 451, 452])
def test_transient_replies(code: int) -> None:
    error = reply_error(Reply(code, ("Try later.",)), "upload x")
    assert isinstance(error, TransientError)
    assert f"{code} Try later." in str(error)


def test_vsftpd_oops_is_a_dead_session_not_a_refusal() -> None:
    error = reply_error(Reply(500, ("OOPS: priv_sock_get_int",)), "upload x")
    assert isinstance(error, TransientError)
    assert "500 OOPS: priv_sock_get_int" in str(error)
    assert isinstance(reply_error(Reply(500, ("Unknown command.",)), "upload x"), PermanentError)


def test_refused_login_is_credentials_refused() -> None:
    error = reply_error(Reply(530, ("Login incorrect.",)), "log in")
    assert isinstance(error, CredentialsRefused)
    assert isinstance(error, PermanentError)


def test_550_is_not_found_only_where_a_path_was_looked_up() -> None:
    looked_up = reply_error(Reply(550, ("No such file.",)), "stat x", path_lookup=True)
    refused = reply_error(Reply(550, ("Permission denied.",)), "upload x")
    assert isinstance(looked_up, NotFound)
    assert isinstance(looked_up, ServerPathMissing)
    assert isinstance(refused, PermanentError)
    assert not isinstance(refused, NotFound)
    assert isinstance(reply_error(Reply(553, ("Bad name.",)), "upload x"), PermanentError)


def test_multi_line_reply_text_joins_its_lines() -> None:
    reply = Reply(211, ("-Features:", " MDTM", " SIZE", " End"))
    assert reply.text == "Features: MDTM SIZE End"


def test_server_hash_commands() -> None:
    proftpd = {"HASH": "CRC32;MD5;SHA-1*;SHA-256;", "XMD5": "", "XSHA256": "", "XCRC": ""}
    offered = offered_hashes(proftpd)
    assert offered == {
        "crc32": "HASH CRC32",
        "md5": "HASH MD5",
        "sha1": "HASH",
        "sha256": "HASH SHA-256",
    }
    assert choose_hash(offered, {"sha256": "ab"}) == "sha256", "what copy() expects first"
    assert choose_hash(offered, {}) == "md5"
    assert offered_hashes({"XMD5": "", "XCRC": ""}) == {"md5": "XMD5", "crc32": "XCRC"}
    assert choose_hash(offered_hashes({"MDTM": ""}), {"md5": "ab"}) is None
    digest = "d41d8cd98f00b204e9800998ecf8427e"
    assert hash_in(f"MD5 0-0 {digest} empty.csv", 32) == digest
    assert hash_in(f"{digest.upper()}", 32) == digest
    assert hash_in("SHA-1 0-3 a9993e364706816aba3e25717850c26c9cd0d89d x", 32) is None


def test_settings_normalise_fingerprint_and_zone() -> None:
    settings = FtpSettings(host="h", fingerprint="AB:" * 31 + "AB", time_zone="-05:30")
    assert settings.fingerprint == "ab" * 32
    assert settings.zone.utcoffset(None) == -timedelta(hours=5, minutes=30)
    assert FtpSettings(host="h", tls="implicit").effective_port == 990
    with pytest.raises(ValueError, match="fingerprint"):
        FtpSettings(host="h", fingerprint="abc")
    with pytest.raises(ValueError, match="time_zone"):
        FtpSettings(host="h", time_zone="EST")
