"""``conveyor source check`` and ``conveyor plan`` against real servers (S5):
the check says exactly why a source cannot be read, the plan says what the
next poll would copy and skip, and neither changes anything."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncssh
import pytest

from conveyor_cli.localstack import servers
from conveyor_cli.localstack.processes import free_port
from conveyor_shared.config.loader import parse_routes_text
from conveyor_shared.config.sources import ProviderSource
from conveyor_shared.ledger.received import ReceivedLedger
from conveyor_shared.secrets import SecretStore
from conveyor_shared.sync.check import check_source, plan
from conveyor_shared.sync.detect import Verdict
from conveyor_shared.sync.remote import ByProtocol, installed_openers
from tests.ftp_servers import FtpServers, writable_directory
from tests.support import Stack, drain


def parsed(spec: dict[str, Any]) -> ProviderSource:
    return parse_routes_text(json.dumps({"sources": [spec]}), "test routes").sources[0]


@pytest.fixture
async def opener(aws: dict[str, Any]) -> AsyncIterator[ByProtocol]:
    async with contextlib.AsyncExitStack() as closing:
        yield ByProtocol(await installed_openers(closing, SecretStore(aws["secretsmanager"])))


@pytest.fixture
async def sftp_spec(
    stack: Stack, aws: dict[str, Any], sshd: servers.Sshd, unique: str
) -> dict[str, Any]:
    folder = sshd.root / f"check-{unique}"
    folder.mkdir()
    secret = f"{stack.name}/check-sftp"
    await aws["secretsmanager"].create_secret(
        Name=secret, SecretString=json.dumps({"private_key": sshd.private_key})
    )
    return {
        "id": f"check-{unique}",
        "name": "Checked partner",
        "partner_id": "H4001",
        "protocol": "sftp",
        "host": "127.0.0.1",
        "port": sshd.port,
        "username": sshd.username,
        "credentials": {"secret": secret},
        "host_keys": [sshd.host_key],
        "directory": folder.name,
        "landing": f"s3://{stack.name}-landing/in/",
        "audience": "care_team",
    }


async def test_a_reachable_source_reports_what_it_found(
    sftp_spec: dict[str, Any], sshd: servers.Sshd, opener: ByProtocol
) -> None:
    empty = await check_source(parsed(sftp_spec), opener)
    assert empty.ok
    assert empty.files == 0
    assert empty.note is not None
    assert "empty listing" in empty.note
    (sshd.root / sftp_spec["directory"] / "claims.csv").write_text("x")
    found = await check_source(parsed(sftp_spec), opener)
    assert (found.ok, found.files, found.sample, found.note) == (True, 1, ["claims.csv"], None)


async def test_each_failure_is_named(
    sftp_spec: dict[str, Any], stack: Stack, aws: dict[str, Any], opener: ByProtocol
) -> None:
    other_key = asyncssh.generate_private_key("ssh-ed25519")
    wrong_login = f"{stack.name}/check-wrong-key"
    await aws["secretsmanager"].create_secret(
        Name=wrong_login,
        SecretString=json.dumps({"private_key": other_key.export_private_key().decode()}),
    )
    cases: dict[str, dict[str, Any]] = {
        "dns": {"host": "no-such-host.invalid"},
        "refused": {"port": free_port()},
        "host_key": {"host_keys": [other_key.export_public_key().decode().strip()]},
        "login": {"credentials": {"secret": wrong_login}},
    }
    for stage, change in cases.items():
        report = await check_source(parsed({**sftp_spec, **change}), opener, within_seconds=10)
        assert (report.ok, report.failed_at) == (False, stage), report
        assert report.reason


async def test_ftp_login_refused(
    ftp_servers: FtpServers, stack: Stack, aws: dict[str, Any], opener: ByProtocol, unique: str
) -> None:
    server = ftp_servers.get("pyftpdlib")
    folder = writable_directory(server, f"check-{unique}")
    secret = f"{stack.name}/check-ftp"
    await aws["secretsmanager"].create_secret(
        Name=secret, SecretString=json.dumps({"password": "not-the-password"})
    )
    spec = {
        "id": f"check-{unique}",
        "name": "FTP partner",
        "partner_id": "H4002",
        "protocol": "ftp",
        "host": "127.0.0.1",
        "port": server.port,
        "username": server.username,
        "credentials": {"secret": secret},
        "directory": folder.name,
        "landing": f"s3://{stack.name}-landing/in/",
        "audience": "process",
    }
    report = await check_source(parsed(spec), opener, within_seconds=10)
    assert (report.ok, report.failed_at) == (False, "login"), report
    assert "not-the-password" not in (report.reason or "")


async def test_plan_says_what_the_next_poll_would_do_and_changes_nothing(
    sftp_spec: dict[str, Any],
    sshd: servers.Sshd,
    stack: Stack,
    aws: dict[str, Any],
    opener: ByProtocol,
) -> None:
    folder = sshd.root / sftp_spec["directory"]
    (folder / "ready.csv").write_text("ready")
    (folder / "writing.csv.part").write_text("half")
    source = parsed({**sftp_spec, "stability": {"settle_seconds": 0}})
    ledger = ReceivedLedger(aws["dynamodb"], f"{stack.name}-received")

    (only,) = await plan([source], ledger, opener, source.id)
    by_path = {f.path: f for f in only.files}
    assert (by_path["ready.csv"].action, by_path["ready.csv"].verdict) == ("copy", Verdict.FETCH)
    assert by_path["writing.csv.part"].action == "skip"
    assert "temporary" in by_path["writing.csv.part"].reason
    assert [f.path for f in only.to_copy] == ["ready.csv"]

    assert [s async for s in ledger.states(source.id)] == []
    assert await drain(aws["sqs"], stack.outputs["SyncFetchQueueUrl"], settle=0.3) == []
    with pytest.raises(KeyError):
        await plan([source], ledger, opener, "no-such-source")
