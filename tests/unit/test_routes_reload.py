"""A live reload of the routes file says what it did: an invalid edit is an
error naming every problem (once), a good one names the routes it changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from conveyor_shared.config.loader import RoutesSource
from tests.support import write_routes


def route(client_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": f"client {client_id}",
        "client_id": client_id,
        "contacts": [f"{client_id.lower()}@example.com"],
        "pickup": f"s3://pickup-bucket/{client_id}/",
        "destination": {"type": "s3", "bucket": "elsewhere"},
        **extra,
    }


async def test_an_invalid_edit_is_logged_once_and_the_good_routes_stay(tmp_path: Path) -> None:
    path = write_routes(tmp_path / "routes.yaml", [route("H1001")])
    source = RoutesSource(str(path), refresh_seconds=0)
    await source.get()
    write_routes(path, [route("H1001"), route("H1001", name="twin", contacts=["nobody"])])
    with structlog.testing.capture_logs() as logs:
        current = await source.get()
        await source.get()  # the same bad edit read again: not reported again
    assert [r.client_id for r in current.routes] == ["H1001"]
    [rejected] = [e for e in logs if e["event"] == "config.reload_rejected"]
    assert rejected["log_level"] == "error"
    assert rejected["problems"][0] == (
        "routes[1].client_id: duplicate client id 'H1001' (also routes[0])"
    )
    assert "routes[1].contacts[0]: value is not a valid email address" in rejected["problems"][1]
    assert source.last_error is not None


async def test_a_good_edit_is_logged_with_what_changed(tmp_path: Path) -> None:
    path = write_routes(tmp_path / "routes.yaml", [route("H1001"), route("H1002")])
    source = RoutesSource(str(path), refresh_seconds=0)
    await source.get()
    write_routes(path, [route("H1001", notify=False), route("H1003")])
    with structlog.testing.capture_logs() as logs:
        current = await source.get()
    assert [r.client_id for r in current.routes] == ["H1001", "H1003"]
    [reloaded] = [e for e in logs if e["event"] == "config.reloaded"]
    assert (reloaded["added"], reloaded["removed"], reloaded["changed"]) == (
        ["H1003"],
        ["H1002"],
        ["H1001"],
    )
    assert source.last_error is None
