"""transfer-sftp against the real path (D6, D7): a file put into a
pick-up in moto reaches OpenSSH's sshd through the scanner and the SFTP
transfer service (both in-process), and the ledger and the events on the
stack's SNS topic say how it went.

Failures are real ones: a host key that is not the server's, a password the
server refuses, a read-only server (``internal-sftp -R``: root would bypass
file modes), a missing directory, a TCP proxy that cuts the first
connection mid-file, and a server that runs no commands (no ``md5sum``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import structlog

from conveyor_cli.localstack import servers
from conveyor_scanner.app import run as run_scanner
from conveyor_scanner.settings import ScannerSettings
from conveyor_shared.backends.sftp import is_temporary_name
from conveyor_shared.delivery.service import TransferSettings
from conveyor_shared.ledger.dynamo import from_item
from conveyor_transfer_sftp.app import run as run_transfer_sftp
from tests.support import (
    InProcessServices,
    Stack,
    TcpProxy,
    eventually,
    subscribe_events,
    watch_final_name,
    write_routes,
)

MiB = 1024 * 1024
CLIENT = "H2001"
WRONG_PASSWORD = "not-the-password-7f3a"


@pytest.fixture(scope="module")
def sshd_read_only(state_dir: Path) -> Iterator[servers.Sshd]:
    server = servers.start_sshd(state_dir, name="sshd-read-only", sftp_flags=("-R",))
    yield server
    server.process.stop()


@pytest.fixture(scope="module")
def sshd_sftp_only(state_dir: Path) -> Iterator[servers.Sshd]:
    server = servers.start_sshd(state_dir, name="sshd-sftp-only", sftp_only=True)
    yield server
    server.process.stop()


@pytest.fixture(scope="module")
def sshd_with_passwords(state_dir: Path) -> Iterator[servers.Sshd]:
    server = servers.start_sshd(state_dir, name="sshd-passwords", password_authentication=True)
    yield server
    server.process.stop()


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Every structlog event the in-process services log during the test."""
    with structlog.testing.capture_logs() as captured:
        yield captured


@dataclass
class Delivery:
    """One route to SFTP, its services running, and ways to watch the outcome."""

    stack: Stack
    aws: dict[str, Any]
    server: servers.Sshd
    directory: str
    events_queue: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.server.root / self.directory

    async def put(self, name: str, body: bytes) -> None:
        await self.aws["s3"].put_object(
            Bucket=self.stack.pickup_bucket, Key=f"{CLIENT}/{name}", Body=body
        )

    async def settled(self, timeout: float = 60) -> dict[str, Any]:
        """The file's ledger entry once it is ``success`` or ``fail``."""

        async def entry() -> dict[str, Any] | None:
            items = (
                await self.aws["dynamodb"].query(
                    TableName=f"{self.stack.name}-files",
                    KeyConditionExpression="clientId = :c",
                    ExpressionAttributeValues={":c": {"S": CLIENT}},
                    ConsistentRead=True,
                )
            )["Items"]
            settled = [from_item(i) for i in items if i["status"]["S"] in {"success", "fail"}]
            return settled[0] if settled else None

        return await eventually(entry, timeout=timeout, what="the file to settle in the ledger")

    async def events_until_job_finished(self) -> list[dict[str, Any]]:
        """Events on the topic up to ``job.finished`` (published after ``file.failed``)."""

        async def finished() -> bool:
            response = await self.aws["sqs"].receive_message(
                QueueUrl=self.events_queue, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            for message in response.get("Messages", []):
                self.events.append(json.loads(message["Body"]))
                await self.aws["sqs"].delete_message(
                    QueueUrl=self.events_queue, ReceiptHandle=message["ReceiptHandle"]
                )
            return any(e["kind"] == "job.finished" for e in self.events)

        await eventually(finished, timeout=60, what="job.finished on the events topic")
        return self.events


@pytest.fixture
def start(
    stack: Stack,
    aws: dict[str, Any],
    services: InProcessServices,
    sshd: servers.Sshd,
    tmp_path: Path,
    unique: str,
) -> Any:
    """Start a delivery: ``await start(secret={...}, server=..., **destination settings)``."""

    async def start_delivery(
        *,
        server: servers.Sshd = sshd,
        secret: dict[str, str] | None = None,
        make_directory: bool = True,
        port: int | None = None,
        **destination: Any,
    ) -> Delivery:
        directory = destination.pop("directory", f"inbound-{unique}")
        if make_directory:
            (server.root / directory).mkdir(parents=True)
        secret_name = f"{stack.name}/sftp"
        await aws["secretsmanager"].create_secret(
            Name=secret_name,
            SecretString=json.dumps(secret or {"private_key": server.private_key}),
        )
        spec = {
            "type": "sftp",
            "host": "127.0.0.1",
            "port": port or server.port,
            "username": server.username,
            "directory": directory,
            "host_keys": [server.host_key],
            "credentials": {"secret": secret_name},
            **destination,
        }
        routes = write_routes(
            tmp_path / "routes.yaml",
            [
                {
                    "name": "SFTP client",
                    "client_id": CLIENT,
                    "contacts": ["ops@example.com"],
                    "pickup": f"s3://{stack.pickup_bucket}/{CLIENT}/",
                    "destination": spec,
                }
            ],
        )
        common: dict[str, Any] = {
            "stack": stack.name,
            "routes_uri": str(routes),
            "environment": "test",
            "receive_wait_seconds": 1,
        }
        delivery = Delivery(stack, aws, server, directory, await subscribe_events(aws, stack))
        services.start(run_scanner, ScannerSettings(**common, batch_window_seconds=0.2))
        services.start(run_transfer_sftp, TransferSettings(**common))
        return delivery

    return start_delivery


def names_in(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def assert_failed_once(delivery: Delivery, entry: dict[str, Any], *needles: str) -> str:
    assert entry["status"] == "fail"
    assert entry["sendAttempts"] == 1, "a permanent error must not be retried"
    assert entry["errorKind"] == "permanent"
    for needle in needles:
        assert needle in entry["lastError"]
    return str(entry["lastError"])


async def assert_one_failure_event(delivery: Delivery, error: str) -> None:
    events = await delivery.events_until_job_finished()
    failed = [e for e in events if e["kind"] == "file.failed"]
    assert len(failed) == 1
    assert failed[0]["error"] == error
    assert failed[0]["attempts"] == 1
    finished = [e for e in events if e["kind"] == "job.finished"]
    assert (finished[0]["succeeded"], finished[0]["failed"]) == (0, 1)


async def test_file_is_delivered_verified_with_ledger_success(start: Any) -> None:
    delivery = await start()
    body = os.urandom(3 * MiB + 17)
    await delivery.put("claims 2026-11.csv", body)
    entry = await delivery.settled()
    assert entry["status"] == "success"
    assert entry["sendAttempts"] == 1
    server = delivery.server
    assert entry["deliveredTo"] == (
        f"sftp://{server.username}@127.0.0.1:{server.port}/{delivery.directory}/claims 2026-11.csv"
    )
    assert (delivery.root / "claims 2026-11.csv").read_bytes() == body
    assert names_in(delivery.root) == ["claims 2026-11.csv"]
    assert entry["verifiedBy"] == "md5:destination", "md5sum on the server matched the ETag"
    events = await delivery.events_until_job_finished()
    assert not [e for e in events if e["kind"] == "file.failed"]


async def test_a_server_without_commands_is_verified_by_the_stream(
    start: Any, sshd_sftp_only: servers.Sshd
) -> None:
    delivery = await start(server=sshd_sftp_only)
    body = os.urandom(2 * MiB + 9)
    await delivery.put("claims.csv", body)
    entry = await delivery.settled()
    assert entry["status"] == "success"
    # What was read matched the SHA-256 the scanner recorded (and the ETag); no md5sum.
    assert entry["verifiedBy"] == "sha256:stream"
    assert (delivery.root / "claims.csv").read_bytes() == body


async def test_wrong_host_key_fails_at_once(start: Any, sshd: servers.Sshd) -> None:
    stranger = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    delivery = await start(host_keys=[stranger])
    await delivery.put("report.csv", b"a,b\n")
    entry = await delivery.settled()
    error = assert_failed_once(delivery, entry, f"127.0.0.1:{sshd.port}", "host key")
    await assert_one_failure_event(delivery, error)
    assert names_in(delivery.root) == []


async def test_wrong_password_fails_at_once_and_is_never_logged(
    start: Any, sshd_with_passwords: servers.Sshd, logs: list[dict[str, Any]]
) -> None:
    delivery = await start(server=sshd_with_passwords, secret={"password": WRONG_PASSWORD})
    await delivery.put("report.csv", b"a,b\n")
    entry = await delivery.settled()
    error = assert_failed_once(delivery, entry, "refused the credentials")
    await assert_one_failure_event(delivery, error)
    assert WRONG_PASSWORD not in json.dumps(entry, default=str)
    assert WRONG_PASSWORD not in json.dumps(logs, default=str)
    assert WRONG_PASSWORD not in json.dumps(delivery.events)


async def test_permission_denied_fails_at_once(start: Any, sshd_read_only: servers.Sshd) -> None:
    delivery = await start(server=sshd_read_only)
    await delivery.put("report.csv", b"a,b\n")
    entry = await delivery.settled()
    error = assert_failed_once(delivery, entry, "permission denied")
    await assert_one_failure_event(delivery, error)
    assert names_in(delivery.root) == []


async def test_missing_directory_is_a_clear_error_without_create_directory(
    start: Any, unique: str
) -> None:
    delivery = await start(directory=f"absent-{unique}", make_directory=False)
    await delivery.put("report.csv", b"a,b\n")
    entry = await delivery.settled()
    error = assert_failed_once(delivery, entry, f"absent-{unique}", "create_directory")
    await assert_one_failure_event(delivery, error)
    assert not delivery.root.exists()


async def test_missing_directories_are_created_with_create_directory(
    start: Any, unique: str
) -> None:
    delivery = await start(
        directory=f"made-{unique}/inbound", make_directory=False, create_directory=True
    )
    await delivery.put("2026/11/report.csv", b"a,b\n")
    entry = await delivery.settled()
    assert entry["status"] == "success"
    assert (delivery.root / "2026/11/report.csv").read_bytes() == b"a,b\n"


# -- a connection dropped mid-file ----------------------------------------------------


async def test_dropped_connection_is_retried_and_delivered_once(
    start: Any, sshd: servers.Sshd, logs: list[dict[str, Any]]
) -> None:
    body = os.urandom(12 * MiB + 5)
    async with TcpProxy(sshd.port, cut_after=4 * MiB) as proxy:
        delivery = await start(port=proxy.port)
        final = delivery.root / "big.bin"
        async with watch_final_name(final, len(body)) as wrong_sizes:
            await delivery.put("big.bin", body)
            entry = await delivery.settled()
        assert proxy.cut, "the proxy should have cut the first connection"
        assert proxy.connections >= 2
    assert entry["status"] == "success"
    assert wrong_sizes == [], "a partial file was visible under the final name"
    assert final.read_bytes() == body
    assert names_in(delivery.root) == ["big.bin"], "the cut try's temporary file was removed"
    assert not [name for name in names_in(delivery.root) if is_temporary_name(name)]
    events = await delivery.events_until_job_finished()
    # The settle is recorded before the worker logs it: the job's end comes after both.
    assert len([e for e in logs if e["event"] == "transfer.delivered"]) == 1
    assert not [e for e in logs if e["event"] == "transfer.failed"]
    assert next(e for e in events if e["kind"] == "job.finished")["succeeded"] == 1
    assert not [e for e in events if e["kind"] == "file.failed"]
