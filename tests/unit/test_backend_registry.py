"""The backend registry: one entry per destination model, each SDK behind
the extra its service asks for, and backend modules imported only when used."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conveyor_shared.backends.registry import BACKENDS, backend, factory_maker
from conveyor_shared.config.models import DESTINATION_TYPES, Route
from conveyor_shared.errors import Misconfigured

ROOT = Path(__file__).resolve().parents[2]


def pyproject(path: str) -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / path / "pyproject.toml").read_text())


def test_one_backend_per_destination_model_in_the_routes_file() -> None:
    assert tuple(BACKENDS) == DESTINATION_TYPES == ("gcs", "sftp", "s3", "ftp")
    union = Route.model_fields["destination"].annotation
    assert {b.config for b in BACKENDS.values()} == set(union.__args__)  # type: ignore[union-attr]


def test_each_transfer_service_asks_for_its_backends_extra() -> None:
    extras = pyproject("shared")["project"]["optional-dependencies"]
    for name, entry in BACKENDS.items():
        assert entry.extra in extras, name
        wanted = pyproject(f"services/transfer-{name}")["project"]["dependencies"]
        assert f"conveyor-shared[{entry.extra}]" in wanted, name


def test_the_sdks_are_not_installed_for_every_service() -> None:
    core = " ".join(pyproject("shared")["project"]["dependencies"])
    assert "asyncssh" not in core
    assert "gcloud" not in core
    assert "aioftp" not in core


def test_unknown_type_is_misconfigured_and_lists_the_known_ones() -> None:
    with pytest.raises(Misconfigured, match="gcs, sftp, s3"):
        backend("webdav")


def test_missing_sdk_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in [m for m in sys.modules if m.startswith("conveyor_shared.backends.sftp")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "asyncssh", None)  # as if it were not installed
    with pytest.raises(Misconfigured, match=r"conveyor-shared\[sftp\].*'asyncssh'"):
        factory_maker("sftp", None)  # type: ignore[arg-type]


def test_a_service_installed_alone_imports_without_other_backends_sdks(tmp_path: Path) -> None:
    """What the image does: ``uv sync --package`` one service, into its own environment."""
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv")}
    subprocess.run(
        ["uv", "sync", "--frozen", "--no-dev", "--package", "conveyor-transfer-sftp"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    probe = (
        "import importlib.util as u, conveyor_transfer_sftp.__main__\n"
        "from conveyor_shared.backends.registry import factory_maker\n"
        "factory_maker('sftp', None)\n"
        "assert u.find_spec('gcloud') is None, 'the GCS SDK was installed too'\n"
        "try:\n"
        "    factory_maker('gcs', None)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    python = tmp_path / "venv" / "bin" / "python"
    result = subprocess.run(
        [python, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert result.stdout.startswith("Misconfigured the gcs backend needs conveyor-shared[gcs]")
