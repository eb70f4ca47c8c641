"""How a configured destination prefix becomes a folder in a bucket."""

from __future__ import annotations


def folder(prefix: str) -> str:
    """``prefix`` as a key prefix naming a folder: "a/b", "a/b/" and "/a/b" all
    give "a/b/"; "" (or "/") is the bucket's root. Without the trailing slash
    "in" would put "x.csv" at "inx.csv"."""
    prefix = prefix.lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"
