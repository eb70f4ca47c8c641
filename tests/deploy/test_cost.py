"""docs/cost.md shows what bench/cost.py computes, so the two cannot drift."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from bench import cost

DOC = Path(__file__).resolve().parents[2] / "docs" / "cost.md"


def test_cost_page_shows_the_scripts_arithmetic() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cost.main(["--requests-per-file", "7"])
    assert out.getvalue().strip() in DOC.read_text()


def test_scaling_the_mix_scales_every_billed_request_but_s3s_events() -> None:
    measured = cost.PerFile()
    scaled = measured.scaled_to(7)
    factor = 7 / measured.requests
    assert scaled.requests == 7
    assert abs(scaled.dynamodb_wru - measured.dynamodb_wru * factor) < 1e-9
    assert abs(scaled.sqs - measured.sqs * factor) < 1e-9
    assert scaled.s3_events == measured.s3_events
