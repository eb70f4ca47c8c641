"""Paths inside a backend's root: a configured prefix as a bucket folder, and
the relative paths a directory-based backend (SFTP, FTP) accepts."""

from __future__ import annotations

from conveyor_shared.errors import PermanentError


def folder(prefix: str) -> str:
    """``prefix`` as a key prefix naming a folder: "a/b", "a/b/" and "/a/b" all
    give "a/b/"; "" (or "/") is the bucket's root. Without the trailing slash
    "in" would put "x.csv" at "inx.csv"."""
    prefix = prefix.lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def checked_relative(path: str) -> str:
    """``path`` unchanged if it stays inside the directory it is relative to;
    ``PermanentError`` for an empty, absolute or ``..`` path, or one with
    empty segments (``a//b``)."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in {"", ".", ".."} for p in parts):
        raise PermanentError(
            f"refusing {path!r}: only plain relative paths stay inside the directory"
        )
    return path
