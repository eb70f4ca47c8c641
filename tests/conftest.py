"""Session fixtures start real servers on free 127.0.0.1 ports and yield how
to reach them; factory fixtures create uniquely named resources.

Every test gets its own deployment of deploy/conveyor.yaml (queues, topic,
tables, pick-up bucket) in the one moto server, so tests cannot see each
other's messages.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aioboto3
import boto3
import pytest
import stamina

from conveyor_cli.localstack import servers
from conveyor_cli.localstack.deploy import deploy_stack
from conveyor_shared.aws import CLIENT_CONFIG
from tests.ftp_servers import ftp_servers  # noqa: F401 - the fixture, for every test
from tests.support import InProcessServices, Stack


@pytest.fixture(scope="session", autouse=True)
def _fast_retries() -> None:
    """Back-off off in tests: retries happen at once (stamina's testing switch)."""
    stamina.set_testing(True, attempts=3)


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conveyor-local")


@pytest.fixture(scope="session")
def moto(state_dir: Path) -> Iterator[servers.Moto]:
    server = servers.start_moto(state_dir)
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    os.environ.pop("AWS_CA_BUNDLE", None)
    yield server
    server.process.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def gcs(state_dir: Path) -> Iterator[servers.GcsEmulator]:
    server = servers.start_gcs(state_dir)
    os.environ.update(server.env)
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def sshd(state_dir: Path) -> Iterator[servers.Sshd]:
    server = servers.start_sshd(state_dir)
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def ftp(state_dir: Path) -> Iterator[servers.FtpServer]:
    server = servers.start_ftp(state_dir)
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def smtp(state_dir: Path) -> Iterator[servers.SmtpServer]:
    server = servers.start_smtp(state_dir)
    yield server
    server.process.stop()


@pytest.fixture
def unique() -> str:
    return secrets.token_hex(4)


@pytest.fixture
def stack(moto: servers.Moto, unique: str) -> Stack:
    name = f"t{unique}"
    deployed = deploy_stack(boto3.Session(), name, {"PickupBucketName": f"{name}-pickup"})
    return Stack(name, f"{name}-pickup", deployed.outputs)


@pytest.fixture
async def aws(moto: servers.Moto) -> AsyncIterator[dict[str, Any]]:
    """aioboto3 clients against moto, by service name."""
    session = aioboto3.Session(region_name="us-east-1")
    names = ("s3", "sqs", "sns", "dynamodb", "secretsmanager", "sesv2")
    clients: dict[str, Any] = {}
    try:
        for name in names:
            clients[name] = await session.client(name, config=CLIENT_CONFIG).__aenter__()
        yield clients
    finally:
        await asyncio.gather(*(c.__aexit__(None, None, None) for c in clients.values()))


@pytest.fixture
async def services() -> AsyncIterator[InProcessServices]:
    running = InProcessServices()
    yield running
    await running.close()
