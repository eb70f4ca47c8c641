"""`conveyor config validate` rejects each bad input, naming the field and why,
and accepts the shipped example (D1, S8)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor_shared.config import ConfigError, validate_routes

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "routes.yaml"


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def problems(document: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        validate_routes(document)
    return {p.path: p.message for p in caught.value.problems}


def run_cli(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor_cli.main", "config", "validate", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_shipped_example_is_valid() -> None:
    routes = validate_routes(example())
    assert [r.client_id for r in routes.routes] == ["H1234", "H5678", "H9012", "H3456", "bcbs-tx"]
    assert routes.routes[1].done_file_key == "H5678/H5678.done"


def test_cli_accepts_the_example() -> None:
    result = run_cli(EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert "valid, 5 route(s)" in result.stdout


def test_unknown_key_is_named() -> None:
    doc = example()
    doc["routes"][0]["notifyy"] = True
    assert problems(doc) == {"routes[0].notifyy": "unknown key"}


def test_missing_field_is_named() -> None:
    doc = example()
    del doc["routes"][1]["destination"]["host"]
    assert problems(doc) == {"routes[1].destination.host": "missing field"}


def test_malformed_email_is_named() -> None:
    doc = example()
    doc["routes"][0]["contacts"][1] = "it-team at acme"
    found = problems(doc)
    assert list(found) == ["routes[0].contacts[1]"]
    assert "not a valid email address" in found["routes[0].contacts[1]"]


def test_duplicate_client_id() -> None:
    doc = example()
    doc["routes"][2]["client_id"] = "H1234"
    assert problems(doc) == {"routes[2].client_id": "duplicate client id 'H1234' (also routes[0])"}


def test_overlapping_pickups() -> None:
    doc = example()
    doc["routes"][2]["pickup"] = "s3://example-conveyor-pickup/H1234/sub/"
    found = problems(doc)
    assert list(found) == ["routes[2].pickup"]
    assert "overlaps routes[0].pickup" in found["routes[2].pickup"]


def test_unknown_destination_type() -> None:
    doc = example()
    doc["routes"][0]["destination"]["type"] = "dropbox"
    found = problems(doc)
    assert found == {
        "routes[0].destination": (
            "unknown destination type 'dropbox'; expected one of gcs, sftp, s3, ftp"
        )
    }


@pytest.mark.parametrize(
    ("where", "key"),
    [(1, "password"), (1, "private_key"), (2, "secret_access_key")],
)
def test_inline_credentials_are_refused(where: int, key: str) -> None:
    doc = example()
    doc["routes"][where]["destination"][key] = "hunter2"
    found = problems(doc)
    assert list(found) == [f"routes[{where}].destination.{key}"]
    assert found[f"routes[{where}].destination.{key}"].startswith("inline credential")


def test_inline_credentials_inside_credentials_block_are_refused() -> None:
    doc = example()
    doc["routes"][1]["destination"]["credentials"] = {"password": "hunter2"}
    found = problems(doc)
    assert "routes[1].destination.credentials.password" in found
    assert "routes[1].destination.credentials.secret" in found  # still missing its reference


def test_every_problem_is_reported_at_once() -> None:
    doc = example()
    doc["routes"][0]["client_id"] = "1234"
    doc["routes"][1]["port"] = 22
    doc["routes"][2]["contacts"] = []
    assert set(problems(doc)) == {"routes[0].client_id", "routes[1].port", "routes[2].contacts"}


def test_archive_must_not_overlap_a_pickup() -> None:
    doc = example()
    doc["routes"][0]["archive"] = "s3://example-conveyor-pickup/H5678/archive/"
    found = problems(doc)
    assert "overlaps the pick-up of client H5678" in found["routes[0].archive"]


def test_cli_prints_every_problem_and_exits_nonzero(tmp_path: Path) -> None:
    doc = copy.deepcopy(example())
    doc["routes"][0]["destination"]["type"] = "ftpx"
    doc["routes"][1]["destination"]["password"] = "hunter2"
    twin = copy.deepcopy(doc["routes"][2])
    twin |= {"name": "Cedar twin", "pickup": "s3://example-conveyor-pickup/other/"}
    doc["routes"].append(twin)
    bad = tmp_path / "routes.yaml"
    bad.write_text(yaml.safe_dump(doc))
    result = run_cli(bad)
    assert result.returncode == 1
    assert "3 problem(s)" in result.stderr
    assert "routes[0].destination: unknown destination type 'ftpx'" in result.stderr
    assert "routes[1].destination.password: inline credential" in result.stderr
    assert "routes[5].client_id: duplicate client id 'H9012' (also routes[2])" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_cli_reports_yaml_syntax_errors_with_a_line(tmp_path: Path) -> None:
    bad = tmp_path / "routes.yaml"
    bad.write_text("routes:\n  - name: [unclosed\n")
    result = run_cli(bad)
    assert result.returncode == 1
    assert "line 3" in result.stderr or "line 2" in result.stderr


def test_cli_missing_file_exits_2(tmp_path: Path) -> None:
    result = run_cli(tmp_path / "nope.yaml")
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_duplicates_and_overlaps_are_found_in_routes_with_field_errors() -> None:
    doc = example()
    doc["routes"][2]["client_id"] = "H1234"
    doc["routes"][2]["contacts"] = ["not an address"]
    doc["routes"][1]["pickup"] = "s3://example-conveyor-pickup/H1234/sub/"
    doc["routes"][1]["destination"]["port"] = 0
    found = problems(doc)
    assert found["routes[2].client_id"] == "duplicate client id 'H1234' (also routes[0])"
    assert "routes[2].contacts[0]" in found
    assert "overlaps routes[0].pickup" in found["routes[1].pickup"]
    assert "routes[1].destination.port" in found


def test_an_invalid_field_is_not_compared_with_other_routes() -> None:
    doc = example()
    doc["routes"][1]["client_id"] = "H-1234"
    doc["routes"][2]["client_id"] = "H-1234"
    found = problems(doc)
    assert set(found) == {"routes[1].client_id", "routes[2].client_id"}
    assert all("duplicate" not in message for message in found.values())


@pytest.mark.parametrize(
    "pickup",
    ["s3://example-conveyor-pickup/", "s3://example-conveyor-pickup/conveyor-quarantine/x/"],
)
def test_a_pickup_must_not_contain_the_quarantine(pickup: str) -> None:
    doc = example()
    doc["routes"] = doc["routes"][:1]
    doc["routes"][0]["pickup"] = pickup
    found = problems(doc)
    assert list(found) == ["routes[0].pickup"]
    assert "conveyor-quarantine/, where refused files are moved" in found["routes[0].pickup"]


@pytest.mark.parametrize("route_id", ["H1234", "bcbs-tx", "aetna", "uhc-2026"])
def test_a_route_id_is_an_h_number_or_a_provider_id(route_id: str) -> None:
    doc = example()
    doc["routes"] = doc["routes"][:1]
    doc["routes"][0]["client_id"] = route_id
    assert validate_routes(doc).routes[0].client_id == route_id


@pytest.mark.parametrize(
    "route_id", ["BCBS-TX", "h12345x_", "-bcbs", "1234", "H123", "bcbs tx", ""]
)
def test_a_malformed_route_id_names_the_field_and_both_forms(route_id: str) -> None:
    doc = example()
    doc["routes"][0]["client_id"] = route_id
    message = problems(doc)["routes[0].client_id"]
    assert "H number" in message
    assert "provider id" in message


def test_a_provider_id_is_one_route_like_a_client() -> None:
    doc = example()
    doc["routes"][0]["client_id"] = "bcbs-tx"
    assert problems(doc) == {
        "routes[4].client_id": "duplicate client id 'bcbs-tx' (also routes[0])"
    }


def test_an_ftp_destination_takes_the_backends_settings() -> None:
    route = validate_routes(example()).routes[3]
    assert route.destination.type == "ftp"
    assert route.destination.upload_mode == "delete_then_rename"
    assert route.destination.effective_port == 21
    doc = example()
    doc["routes"][3]["destination"]["upload_mode"] = "overwrite"
    doc["routes"][3]["destination"]["fingerprint"] = "ab:cd"
    found = problems(doc)
    assert set(found) == {
        "routes[3].destination.upload_mode",
        "routes[3].destination.fingerprint",
    }
    assert "SHA-256" in found["routes[3].destination.fingerprint"]
