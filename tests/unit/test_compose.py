"""docker-compose.yml describes the same stack as `conveyor dev up`, with the
same environment variables (no Docker engine here to run it: this keeps the
two from drifting)."""

from __future__ import annotations

from pathlib import Path

import yaml

from conveyor_cli.localstack.stack import SERVICES, DemoClients, Endpoints, service_env

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_service_runs_from_its_own_dockerfile() -> None:
    services = compose()["services"]
    for module in SERVICES:
        name = module.removeprefix("conveyor_").replace("_", "-")
        dockerfile = services[name]["build"]["dockerfile"]
        assert dockerfile == f"services/{name}/Dockerfile"
        assert (
            (ROOT / dockerfile).read_text().rstrip().endswith(f'CMD ["python", "-m", "{module}"]')
        )


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
