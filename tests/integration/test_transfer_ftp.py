"""transfer-ftp against real FTP servers through the whole service (D6, D7,
S4, S7): a file put into a pick-up in moto reaches vsftpd or proftpd through
the scanner and the FTP transfer service (both in-process), and the ledger
and the events on the stack's SNS topic say how it went.

What each server needs is what a route says: vsftpd lists with ``LIST`` only
and requires FTPS data connections to resume the control session; proftpd
refuses to rename onto an existing file, so its route says
``upload_mode: delete_then_rename``. The cut connection is real: proxies in
front of the control port and of every passive port, one of which cuts the
upload once half the file passed.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from conveyor_scanner.app import run as run_scanner
from conveyor_scanner.settings import ScannerSettings
from conveyor_shared.backends.temporary import is_temporary_name
from conveyor_shared.delivery.service import TransferSettings
from conveyor_shared.ledger.dynamo import from_item
from conveyor_transfer_ftp.app import run as run_transfer_ftp
from tests.contract.test_ftp import PROXY_HOST, LoopbackProxy
from tests.ftp_servers import FtpServers, FtpTestServer, files_under, writable_directory
from tests.support import (
    InProcessServices,
    Stack,
    eventually,
    subscribe_events,
    watch_final_name,
    write_routes,
)

MiB = 1024 * 1024
CLIENT = "H2004"
WRONG_PASSWORD = "not-the-password-5c1e"


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Every structlog event the in-process services log during the test."""
    with structlog.testing.capture_logs() as captured:
        yield captured


@dataclass
class FtpDelivery:
    """One route to an FTP server, its services running, and its outcome."""

    stack: Stack
    aws: dict[str, Any]
    root: Path
    events_queue: str

    async def put(self, name: str, body: bytes) -> None:
        await self.aws["s3"].put_object(
            Bucket=self.stack.pickup_bucket, Key=f"{CLIENT}/{name}", Body=body
        )

    async def settled(self, count: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
        """The ledger entries once ``count`` of them are ``success`` or ``fail``."""

        async def entries() -> list[dict[str, Any]] | None:
            items = (
                await self.aws["dynamodb"].query(
                    TableName=f"{self.stack.name}-files",
                    KeyConditionExpression="clientId = :c",
                    ExpressionAttributeValues={":c": {"S": CLIENT}},
                    ConsistentRead=True,
                )
            )["Items"]
            done = [from_item(i) for i in items if i["status"]["S"] in {"success", "fail"}]
            return done if len(done) >= count else None

        found = await eventually(entries, timeout=timeout, what="the files to settle")
        return sorted(found, key=lambda entry: str(entry["timestamp"]))

    async def events(self) -> list[dict[str, Any]]:
        """Events on the topic up to the first ``job.finished``."""
        seen: list[dict[str, Any]] = []

        async def finished() -> bool:
            response = await self.aws["sqs"].receive_message(
                QueueUrl=self.events_queue, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            seen.extend(json.loads(m["Body"]) for m in response.get("Messages", []))
            return any(e["kind"] == "job.finished" for e in seen)

        await eventually(finished, timeout=60, what="job.finished on the events topic")
        return seen


def secret_for(server: FtpTestServer, password: str | None = None) -> dict[str, str]:
    """The route's secret: the password, and the server's certificate as the CA for FTPS."""
    secret = {"password": server.password if password is None else password}
    if server.certificate:
        secret["ca_bundle"] = server.certificate
    return secret


@pytest.fixture
def start(
    stack: Stack,
    aws: dict[str, Any],
    services: InProcessServices,
    tmp_path: Path,
    unique: str,
) -> Any:
    """Start a delivery to ``server``: ``await start(server, **destination settings)``."""

    async def start_delivery(
        server: FtpTestServer,
        *,
        secret: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        **destination: Any,
    ) -> FtpDelivery:
        directory = writable_directory(server, f"inbound-{unique}")
        secret_name = f"{stack.name}/ftp"
        await aws["secretsmanager"].create_secret(
            Name=secret_name, SecretString=json.dumps(secret or secret_for(server))
        )
        spec = {
            "type": "ftp",
            "host": host,
            "port": port or server.port,
            "tls": server.tls,
            "username": server.username,
            "directory": directory.name,
            "credentials": {"secret": secret_name},
            "io_timeout": 20,
            "connect_timeout": 10,
            **destination,
        }
        routes = write_routes(
            tmp_path / "routes.yaml",
            [
                {
                    "name": "FTP client",
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
        delivery = FtpDelivery(stack, aws, directory, await subscribe_events(aws, stack))
        services.start(run_scanner, ScannerSettings(**common, batch_window_seconds=0.2))
        services.start(run_transfer_ftp, TransferSettings(**common))
        return delivery

    return start_delivery


def assert_delivered(entry: dict[str, Any], directory: Path, name: str, body: bytes) -> None:
    assert entry["status"] == "success", entry.get("lastError")
    assert (directory / name).read_bytes() == body
    assert not [n for n in files_under(directory) if is_temporary_name(Path(n).name)]


async def test_vsftpd_without_mlsd_gets_the_file_verified_by_the_stream(
    start: Any, ftp_servers: FtpServers
) -> None:
    server = ftp_servers.get("vsftpd")
    delivery = await start(server)
    body = os.urandom(3 * MiB + 11)
    await delivery.put("claims 2026-11.csv", body)
    (entry,) = await delivery.settled()
    assert_delivered(entry, delivery.root, "claims 2026-11.csv", body)
    assert entry["sendAttempts"] == 1
    assert entry["deliveredTo"] == (
        f"ftp://anonymous@127.0.0.1:{server.port}/{delivery.root.name}/claims 2026-11.csv"
    )
    # vsftpd offers no hash: what was read matched the SHA-256 the scanner recorded.
    assert entry["verifiedBy"] == "sha256:stream"
    assert files_under(delivery.root) == ["claims 2026-11.csv"]


async def test_proftpd_refuses_a_rename_onto_a_file_and_names_the_mode_that_works(
    start: Any, ftp_servers: FtpServers
) -> None:
    delivery = await start(ftp_servers.get("proftpd"))
    (delivery.root / "roster.csv").write_bytes(b"last month\n")
    await delivery.put("roster.csv", b"this month\n")
    (entry,) = await delivery.settled()
    assert entry["status"] == "fail"
    assert entry["errorKind"] == "permanent"
    assert entry["sendAttempts"] == 1
    assert "delete_then_rename" in entry["lastError"]
    assert (delivery.root / "roster.csv").read_bytes() == b"last month\n"
    assert files_under(delivery.root) == ["roster.csv"], "the refused upload was removed"


async def test_proftpd_with_delete_then_rename_replaces_the_file_checked_by_its_hash(
    start: Any, ftp_servers: FtpServers
) -> None:
    delivery = await start(ftp_servers.get("proftpd"), upload_mode="delete_then_rename")
    (delivery.root / "roster.csv").write_bytes(b"last month\n")
    body = os.urandom(2 * MiB + 3)
    await delivery.put("roster.csv", body)
    (entry,) = await delivery.settled()
    assert_delivered(entry, delivery.root, "roster.csv", body)
    # mod_digest: the server hashed what it stored, before the rename.
    assert entry["verifiedBy"].endswith(":destination")
    assert files_under(delivery.root) == ["roster.csv"]


async def test_ftps_on_vsftpd_resumes_the_tls_session_on_data_connections(
    start: Any, ftp_servers: FtpServers
) -> None:
    """vsftpd with ``require_ssl_reuse=YES`` refuses a data connection that
    does not resume the control connection's session (522)."""
    delivery = await start(ftp_servers.get("vsftpd", "explicit"))
    body = os.urandom(MiB + 1)
    await delivery.put("eligibility.txt", body)
    (entry,) = await delivery.settled()
    assert_delivered(entry, delivery.root, "eligibility.txt", body)
    assert entry["deliveredTo"].startswith("ftps://anonymous@127.0.0.1:")


class CutOnce:
    """One cut shared by every proxy: the first data connection that carries
    more than ``after`` bytes is cut, no other."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.cuts = 0


class DataLink(LoopbackProxy):
    """A proxy for one passive port that cuts as ``plan`` says."""

    def __init__(self, port: int, plan: CutOnce) -> None:
        super().__init__(port, port=port)
        self.plan = plan

    async def _accept(self, reader: Any, writer: Any) -> None:
        # Listings pass through these links too: every connection may be the
        # one that is cut, until one was.
        self.connections = 0
        self.cut_after = None if self.plan.cuts else self.plan.after
        await super()._accept(reader, writer)

    async def _pump(self, source: Any, sink: Any, rate: int | None, limit: int | None) -> None:
        await super()._pump(source, sink, rate, None if self.plan.cuts else limit)
        if self.cut and not self.plan.cuts:
            self.plan.cuts = 1


@contextlib.asynccontextmanager
async def cutting_front(server: FtpTestServer, plan: CutOnce) -> AsyncIterator[LoopbackProxy]:
    """Proxies on ``PROXY_HOST`` for the control port and every passive port
    (EPSV data connections go to the control host, so through them)."""
    low, high = server.passive_ports
    async with contextlib.AsyncExitStack() as stack:
        control = await stack.enter_async_context(LoopbackProxy(server.port))
        for port in range(low, high + 1):
            await stack.enter_async_context(DataLink(port, plan))
        yield control


async def test_an_upload_cut_at_half_leaves_nothing_and_the_retry_delivers_it_whole(
    start: Any, ftp_servers: FtpServers, logs: list[dict[str, Any]]
) -> None:
    server = ftp_servers.get("vsftpd")
    body = os.urandom(8 * MiB + 5)
    plan = CutOnce(len(body) // 2)
    async with cutting_front(server, plan) as control:
        delivery = await start(server, host=PROXY_HOST, port=control.port)
        final = delivery.root / "big.bin"
        async with watch_final_name(final, len(body)) as wrong_sizes:
            await delivery.put("big.bin", body)
            (entry,) = await delivery.settled()
    assert plan.cuts == 1, "the proxy should have cut the upload once"
    assert wrong_sizes == [], "a partial file was visible under the final name"
    assert_delivered(entry, delivery.root, "big.bin", body)
    assert files_under(delivery.root) == ["big.bin"], "the cut try's temporary file was removed"
    events = await delivery.events()
    assert [e["kind"] for e in events if e["kind"] == "file.failed"] == []
    assert next(e for e in events if e["kind"] == "job.finished")["succeeded"] == 1
    assert len([e for e in logs if e["event"] == "transfer.delivered"]) == 1


async def test_a_wrong_password_fails_at_once_naming_the_reply_and_is_never_logged(
    start: Any, ftp_servers: FtpServers, logs: list[dict[str, Any]]
) -> None:
    server = ftp_servers.get("proftpd")
    delivery = await start(server, secret=secret_for(server, WRONG_PASSWORD))
    await delivery.put("report.csv", b"a,b\n")
    (entry,) = await delivery.settled()
    assert entry["status"] == "fail"
    assert entry["sendAttempts"] == 1, "a refused login is not retried"
    assert entry["errorKind"] == "permanent"
    assert "530" in entry["lastError"], "the server's reply is named"
    events = await delivery.events()
    failed = [e for e in events if e["kind"] == "file.failed"]
    assert [e["error"] for e in failed] == [entry["lastError"]]
    for where in (entry, logs, events):
        assert WRONG_PASSWORD not in json.dumps(where, default=str)
    assert files_under(delivery.root) == []
