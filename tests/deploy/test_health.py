"""The containers' health checks, run as ECS runs them (the task definition's
command in a shell of its own) against a real service: a queue service keeps
its liveness file fresh and the check fails once it goes stale; the API's
check reaches the API's own ``/healthz`` on the port its settings read."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conveyor_api.settings import ApiSettings
from conveyor_shared import health
from tests.api_support import start_api
from tests.deploy.test_templates import RENDER
from tests.support import InProcessServices, Stack, eventually, start_scanner, write_routes

TEMPLATE: dict[str, Any] = RENDER.template()  # type: ignore[attr-defined]


def _container(name: str) -> dict[str, Any]:
    key = "".join(part.capitalize() for part in name.split("-"))
    definition = TEMPLATE["Resources"][f"{key}TaskDefinition"]["Properties"]
    container: dict[str, Any] = definition["ContainerDefinitions"][0]
    container["Volumes"] = definition.get("Volumes", [])
    return container


def _environment(container: dict[str, Any]) -> dict[str, Any]:
    return {e["Name"]: e["Value"] for e in container["Environment"]}


async def _run_check(command: list[str], **replace: str) -> int:
    """The health check's ``CMD`` as the container would run it, with this
    machine's interpreter and ``replace``'s substitutions in its arguments (a
    process of its own, while the services run on this event loop)."""
    assert command[0] == "CMD"
    argv = [sys.executable if command[1] == "python" else command[1], *command[2:]]
    for old, new in replace.items():
        argv = [arg.replace(old, new) for arg in argv]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await asyncio.wait_for(process.wait(), timeout=30)


QUEUE_SERVICES = [s.name for s in RENDER.SERVICES if s.queue]  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", QUEUE_SERVICES)
def test_queue_services_check_a_file_on_a_writable_volume(name: str) -> None:
    container = _container(name)
    path = _environment(container)[health.ENV_VAR]
    command = container["HealthCheck"]["Command"]
    assert command[:4] == ["CMD", "python", "-m", "conveyor_shared.health"]
    assert command[4] == path
    # The bound is several beats: one slow beat is not a stuck service.
    assert float(command[5]) >= 3 * health.BEAT_SECONDS
    [mount] = container["MountPoints"]
    assert path.startswith(mount["ContainerPath"] + "/")
    assert container["ReadonlyRootFilesystem"] is True
    assert mount["SourceVolume"] in {v["Name"] for v in container["Volumes"]}
    # The check must finish well within its interval, and not start before the service does.
    assert container["HealthCheck"]["Timeout"] < container["HealthCheck"]["Interval"]


async def test_a_running_service_passes_and_a_stale_file_fails(
    stack: Stack, services: InProcessServices, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = _container("scanner")
    command = container["HealthCheck"]["Command"]
    alive = tmp_path / "run" / "alive"
    in_image = _environment(container)[health.ENV_VAR]
    assert await _run_check(command, **{in_image: str(alive)}) == 1, "no file yet: unhealthy"
    monkeypatch.setenv(health.ENV_VAR, str(alive))
    start_scanner(services, stack, write_routes(tmp_path / "routes.yaml", []))

    async def written() -> bool:
        return alive.exists()

    await eventually(written, timeout=30, what="the scanner to write its health file")
    assert await _run_check(command, **{in_image: str(alive)}) == 0
    stale = time.time() - float(command[5]) - 5
    os.utime(alive, (stale, stale))  # a loop that stopped beating a while ago
    assert await _run_check(command, **{in_image: str(alive)}) == 1


async def test_api_check_reaches_its_healthz_on_the_port_its_settings_read(
    stack: Stack,
    aws: dict[str, Any],
    services: InProcessServices,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = _container("api")
    environment = _environment(container)
    for name, value in environment.items():
        if isinstance(value, str):
            monkeypatch.setenv(name, value)
    # Values the template computes (names, URIs) are given; the rest come from its environment.
    from_container = ApiSettings(
        stack=stack.name, api_keys_secret="x", routes_uri="s3://config/routes.yaml"
    )
    [mapping] = container["PortMappings"]
    assert from_container.api_port == mapping["ContainerPort"]
    assert from_container.api_host == "0.0.0.0"  # noqa: S104 - the task's own namespace
    target_group = TEMPLATE["Resources"]["ApiTargetGroup"]["Properties"]
    assert target_group["Port"] == from_container.api_port
    assert target_group["HealthCheckPath"] == "/healthz"

    for name in environment:
        monkeypatch.delenv(name, raising=False)
    api = await start_api(services, stack, aws, write_routes(tmp_path / "routes.yaml", []))
    port = api.url.rsplit(":", 1)[1]
    command = container["HealthCheck"]["Command"]
    assert await _run_check(command, **{f":{from_container.api_port}/": f":{port}/"}) == 0
    assert await _run_check(command, **{f":{from_container.api_port}/": f":{port}/no-such"}) != 0
