"""Which pick-up names the scanner refuses, and why (bad input is refused on purpose)."""

from __future__ import annotations

import pytest

from conveyor_scanner.keys import rejection


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("reports\\2026\\claims.csv", "name contains a backslash"),
        ("claims\\.csv", "name contains a backslash"),
        ("../escape.csv", "path contains an empty, '.' or '..' component"),
        ("a//b.csv", "path contains an empty, '.' or '..' component"),
        ("bad\x07name.csv", "name contains a control character"),
        ("tab\there.csv", "name contains a control character"),
        ("x" * 256, "a path component is 256 bytes long; destinations accept 255"),
    ],
)
def test_bad_names_are_refused_with_a_reason(path: str, reason: str) -> None:
    assert rejection(path) == reason


@pytest.mark.parametrize(
    "path", ["claims.csv", "monthly/2026-11/claims.csv", "naïve café.csv", "x" * 255]
)
def test_good_names_are_accepted(path: str) -> None:
    assert rejection(path) is None
