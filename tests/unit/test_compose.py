"""docker-compose.yml describes the same stack as `conveyor dev up`, with the
same environment variables (no Docker engine here to run it: this keeps the
two from drifting)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from conveyor_cli.localstack.stack import SERVICES, DemoClients, Endpoints, service_env

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_service_is_built_from_the_one_dockerfile() -> None:
    services = compose()["services"]
    for module in SERVICES:
        name = module.removeprefix("conveyor_").replace("_", "-")
        assert services[name]["build"] == {
            "context": ".",
            "dockerfile": "deploy/Dockerfile",
            "args": {"SERVICE": name},
        }
        assert not (ROOT / "services" / name / "Dockerfile").exists(), "a second recipe"
        # The image runs the service's script, which must be its module's main.
        project = tomllib.loads((ROOT / "services" / name / "pyproject.toml").read_text())
        assert project["project"]["scripts"][f"conveyor-{name}"] == f"{module}.__main__:main"


def test_the_dockerfile_installs_and_runs_only_the_service_it_is_given() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    steps = [line.strip() for line in dockerfile.replace("\\\n", " ").splitlines()]
    syncs = [step for step in steps if "uv sync" in step]
    assert len(syncs) == 2, "dependencies first, then the service's own code"
    assert all("--frozen --no-dev" in s and '--package "conveyor-$SERVICE"' in s for s in syncs)
    assert "--no-install-workspace" in syncs[0]
    copies = [step for step in steps if step.startswith("COPY") and "/src" in step]
    assert copies == [
        "COPY shared/src shared/src",
        "COPY services/${SERVICE}/src services/${SERVICE}/src",
    ]
    assert steps[-1] == 'CMD exec "conveyor-$SERVICE"'


def test_services_get_the_same_variables_as_under_dev_up() -> None:
    endpoints = Endpoints(
        "http://moto:5000",
        "http://gcs:9023",
        "sftp",
        2222,
        "root",
        "ssh-ed25519 K",
        "/k",
        "/r",
        "smtp",
        1025,
        "ftp",
        2121,
        "partner",
        "p",
    )
    local = service_env(endpoints, DemoClients(), Path("/state/routes.yaml"))
    for name in ("scanner", "transfer-gcs", "transfer-sftp", "transfer-s3", "notifier"):
        environment = compose()["services"][name]["environment"]
        assert set(environment) == set(local), name
        for key in (
            "CONVEYOR_STACK",
            "CONVEYOR_NOTIFIER_TRANSPORT",
            "CONVEYOR_SMTP_STARTTLS",
            "AWS_ENDPOINT_URL",
            "STORAGE_EMULATOR_HOST",
        ):
            assert str(environment[key]) == local[key], key


def test_services_may_drain_before_the_engine_kills_them() -> None:
    from conveyor_shared.delivery.service import TransferSettings

    drain = TransferSettings.model_fields["drain_seconds"].default
    for name, service in compose()["services"].items():
        if "dockerfile" in service.get("build", {}) and name.startswith("transfer-"):
            grace = service["stop_grace_period"]
            assert grace.endswith("s")
            assert int(grace[:-1]) > drain, f"{name} is killed before it has drained"
