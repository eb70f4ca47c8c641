"""Provider sources in the routes file (S1, S8): every bad field is named,
and the settings mean what docs/provider-sync.md says."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from conveyor_shared.config import ConfigError, validate_routes
from conveyor_shared.config.sources import ProviderSource, zone_of


def source(**fields: Any) -> dict[str, Any]:
    return {
        "id": "acme-health",
        "name": "Acme Health",
        "partner_id": "H1234",
        "protocol": "sftp",
        "host": "sftp.acme.example",
        "username": "conveyor",
        "credentials": {"secret": "partners/acme"},
        "host_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample"],
        "landing": "s3://provider-landing/acme/",
        "audience": "care_team",
        **fields,
    }


def parsed(**fields: Any) -> ProviderSource:
    return validate_routes({"sources": [source(**fields)]}).sources[0]


def problems(*sources: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        validate_routes({"sources": list(sources)})
    return {p.path: p.message for p in caught.value.problems}


def test_defaults() -> None:
    acme = parsed()
    assert acme.schedule_minutes == 15
    assert acme.after_copy == "keep"
    assert acme.stability.settle_seconds == 60
    assert acme.server_port == 22
    assert parsed(protocol="ftp", host_keys=[]).server_port == 21


def test_every_bad_field_is_named() -> None:
    found = problems(
        source(
            protocol="gopher",
            schedule_minutes=0,
            audience="everyone",
            after_copy="archive",
            stability={"settle_seconds": -1, "done_marker": "a/b", "settel": 3},
            time_zone="Mars/Olympus",
            landing="s3://provider-landing/conveyor-incoming/",
        )
    )
    assert set(found) == {
        "sources[0].protocol",
        "sources[0].schedule_minutes",
        "sources[0].audience",
        "sources[0].after_copy",
        "sources[0].stability.settle_seconds",
        "sources[0].stability.done_marker",
        "sources[0].stability.settel",
        "sources[0].time_zone",
        "sources[0].landing",
    }
    assert found["sources[0].stability.settel"] == "unknown key"
    assert "conveyor-incoming" in found["sources[0].landing"]


def test_credentials_only_by_reference() -> None:
    found = problems(source(password="hunter2"))
    assert "Secrets Manager" in found["sources[0].password"]
    assert problems(source(credentials=None))["sources[0].credentials"]


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"host_keys": []}, "needs 'host_keys'"),
        ({"protocol": "ftp"}, "for sftp sources only"),
        ({"certificate_sha256": "ab" * 32}, "for ftps sources only"),
        ({"protocol": "ftps", "host_keys": [], "certificate_sha256": "xyz"}, "64 digits"),
    ],
)
def test_protocol_settings(fields: dict[str, Any], needle: str) -> None:
    (message,) = problems(source(**fields)).values()
    assert needle in message


def test_duplicate_ids_are_named_at_the_repeat() -> None:
    found = problems(source(), source(name="Other"), source(id="other"), source(id="other"))
    assert found == {
        "sources[1].id": "duplicate source id 'acme-health' (also sources[0])",
        "sources[3].id": "duplicate source id 'other' (also sources[2])",
    }


def test_a_duplicate_id_is_found_beside_other_bad_fields() -> None:
    found = problems(source(), source(audience="everyone"))
    assert set(found) == {"sources[1].id", "sources[1].audience"}


#: A client's route, whose pick-up no landing may overlap.
ROUTE = {
    "name": "Acme",
    "client_id": "H1001",
    "contacts": ["ops@acme.example"],
    "pickup": "s3://conveyor-pickup/H1001/",
    "destination": {"type": "s3", "bucket": "acme-out"},
}


@pytest.mark.parametrize(
    "landing",
    ["s3://conveyor-pickup/H1001/", "s3://conveyor-pickup/", "s3://conveyor-pickup/H1001/in/"],
)
def test_a_landing_overlapping_a_pickup_is_refused(landing: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_routes({"routes": [ROUTE], "sources": [source(landing=landing)]})
    found = {p.path: p.message for p in caught.value.problems}
    assert found == {
        "sources[0].landing": f"{landing} overlaps routes[0].pickup s3://conveyor-pickup/H1001/: "
        "landed copies would be picked up and delivered"
    }


def test_a_landing_beside_a_pickup_is_accepted() -> None:
    routes = validate_routes(
        {"routes": [ROUTE], "sources": [source(landing="s3://conveyor-pickup/H1002/")]}
    )
    assert str(routes.sources[0].landing) == "s3://conveyor-pickup/H1002/"


def test_include_exclude_and_depth() -> None:
    flat = parsed(include=["*.csv"], exclude=["*test*"])
    assert flat.wants("claims.csv")
    assert not flat.wants("claims.txt")
    assert not flat.wants("claims-test.csv")
    assert not flat.wants("2026/claims.csv"), "not recursive: the top folder only"
    deep = parsed(recursive=True, max_depth=1)
    assert deep.wants("2026/claims.csv")
    assert not deep.wants("2026/12/claims.csv")


@pytest.mark.parametrize(
    ("name", "offset"),
    [("UTC", timedelta(0)), ("-05:00", timedelta(hours=-5)), ("+05:30", timedelta(hours=5.5))],
)
def test_fixed_time_zones(name: str, offset: timedelta) -> None:
    assert datetime(2026, 1, 1, tzinfo=zone_of(name)).utcoffset() == offset


def test_named_time_zones_are_refused() -> None:
    # A daylight-saving change would move every listed time by an hour.
    assert (
        "offset such as -05:00"
        in problems(source(time_zone="America/Chicago"))["sources[0].time_zone"]
    )


def test_pinned_certificate_is_normalised() -> None:
    pinned = parsed(protocol="ftps", host_keys=[], certificate_sha256=":".join(["AB"] * 32))
    assert pinned.certificate_sha256 == "ab" * 32
    assert pinned.server_port == 21
    assert parsed(protocol="ftps", host_keys=[], ftp={"tls": "implicit"}).server_port == 990
