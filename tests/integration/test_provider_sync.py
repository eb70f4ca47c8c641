"""Provider sync against real servers (S1 to S4, S6): files a partner puts
on its server are copied into S3 in moto, every version kept, with the state
per remote path in the stack's received table. The scenarios run against
OpenSSH's sshd, pyftpdlib and proftpd (MLSD), vsftpd (LIST only) and FTPS on
vsftpd.

Polls and fetches run the service's own components on real clients; the
replica test runs two whole services on the stack's queues. Failures are
real: a proxy that stops listening (a server down), and one that cuts the
download mid-file (SFTP: an FTP download has its own data connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from conveyor_cli.localstack import servers
from conveyor_cli.localstack.processes import free_port
from conveyor_provider_sync.app import run as run_provider_sync
from conveyor_provider_sync.fetch import Outcome, SourceFetch, Stores
from conveyor_provider_sync.handoff import HandOff
from conveyor_provider_sync.poll import PollReport, SourcePoll
from conveyor_provider_sync.settings import ProviderSyncSettings
from conveyor_shared.config.loader import parse_routes_text
from conveyor_shared.config.sources import STAGING_PREFIX, ProviderSource
from conveyor_shared.errors import TransientError
from conveyor_shared.ledger.locks import Leases
from conveyor_shared.ledger.received import PathStatus, ReceivedLedger
from conveyor_shared.messaging.publisher import CommandSender, EventPublisher
from conveyor_shared.secrets import SecretStore
from conveyor_shared.sync.messages import FetchRequested, PollRequested
from conveyor_shared.sync.remote import ByProtocol, installed_openers
from tests.ftp_servers import FtpServers, Kind, writable_directory
from tests.support import InProcessServices, Stack, drain, eventually, subscribe_events

MiB = 1024 * 1024


class CuttingProxy:
    """Forwards to ``upstream``; the first connection is cut once the server
    has sent ``cut_after`` bytes through it (a download dropped mid-file).
    ``down`` refuses connections: the server is unreachable."""

    def __init__(self, upstream: int, cut_after: int | None = None) -> None:
        self.upstream = upstream
        self.cut_after = cut_after
        self.cuts = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections = 0

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        limit = self.cut_after if self._connections == 0 else None
        self._connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
            pumps = [
                asyncio.create_task(self._pump(reader, up_writer, None)),
                asyncio.create_task(self._pump(up_reader, writer, limit)),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
            up_writer.transport.abort()
        except OSError:
            pass
        finally:
            writer.transport.abort()
            self._tasks.discard(task)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, limit: int | None
    ) -> None:
        passed = 0
        while data := await source.read(64 * 1024):
            if limit is not None and passed + len(data) > limit:
                self.cuts += 1
                return
            sink.write(data)
            await sink.drain()
            passed += len(data)


@dataclass
class Partner:
    """One SFTP source on the sshd, the components that sync it, and views of
    what landed."""

    stack: Stack
    aws: dict[str, Any]
    folder: Path
    source: ProviderSource
    poll_: SourcePoll
    fetch_: SourceFetch
    fetch_queue: str
    ledger: ReceivedLedger
    landing_bucket: str
    outcomes: list[Outcome] = field(default_factory=list)

    def write(self, name: str, body: bytes, mtime: float | None = None) -> None:
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        if mtime is not None:
            os.utime(path, (mtime, mtime))

    async def poll(self) -> PollReport:
        return await self.poll_.run(self.source, force=True)

    async def fetch_all(self) -> list[Outcome]:
        outcomes = []
        for message in await drain(self.aws["sqs"], self.fetch_queue, settle=0.3):
            request = FetchRequested.model_validate_json(message["Body"])
            outcomes.append(await self.fetch_.run(self.source, request))
            await self.aws["sqs"].delete_message(
                QueueUrl=self.fetch_queue, ReceiptHandle=message["ReceiptHandle"]
            )
        self.outcomes += outcomes
        return outcomes

    async def sync(self) -> list[Outcome]:
        await self.poll()
        return await self.fetch_all()

    async def objects(self, prefix: str = "") -> dict[str, bytes]:
        found = {}
        listing = await self.aws["s3"].list_objects_v2(Bucket=self.landing_bucket, Prefix=prefix)
        for item in listing.get("Contents", []):
            body = await self.aws["s3"].get_object(Bucket=self.landing_bucket, Key=item["Key"])
            found[item["Key"]] = await body["Body"].read()
        return found

    async def landed(self) -> dict[str, bytes]:
        return await self.objects(f"landing/{self.source.id}/")

    async def staged(self) -> dict[str, bytes]:
        return await self.objects(STAGING_PREFIX)

    async def unfinished_uploads(self) -> list[str]:
        response = await self.aws["s3"].list_multipart_uploads(Bucket=self.landing_bucket)
        return [u["Key"] for u in response.get("Uploads", [])]


def sources_yaml(source: dict[str, Any]) -> ProviderSource:
    routes = parse_routes_text(json.dumps({"version": 1, "sources": [source]}), "test routes")
    return routes.sources[0]


#: Every peer the scenarios run against: OpenSSH, pyftpdlib and proftpd
#: (MLSD), vsftpd (no MLSD: LIST times to the minute), and FTPS on vsftpd
#: (explicit, TLS session reuse required on data connections).
PEERS = ["sftp", "pyftpdlib", "vsftpd", "proftpd", "vsftpd-ftps"]


@dataclass(frozen=True)
class Peer:
    """Where a source's files live and how the source reaches them."""

    folder: Path
    secret: dict[str, str]
    spec: dict[str, Any]


def sftp_peer(sshd: servers.Sshd, unique: str, port: int | None) -> Peer:
    folder = sshd.root / f"partner-{unique}"
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "protocol": "sftp",
        "port": port or sshd.port,
        "username": sshd.username,
        "host_keys": [sshd.host_key],
        "directory": folder.name,
    }
    return Peer(folder, {"private_key": sshd.private_key}, spec)


def ftp_peer(ftp_servers: FtpServers, kind: str, unique: str) -> Peer:
    name, _, tls = kind.partition("-")
    server = ftp_servers.get(cast(Kind, name), "explicit" if tls else "none")
    folder = writable_directory(server, f"partner-{unique}")
    secret = {"password": server.password}
    if server.certificate:
        secret["ca_bundle"] = server.certificate
    spec = {
        "protocol": "ftps" if tls else "ftp",
        "port": server.port,
        "username": server.username,
        "directory": folder.name,
        "ftp": {"io_timeout": 20, "connect_timeout": 10},
    }
    return Peer(folder, secret, spec)


@pytest.fixture(params=PEERS)
def peer_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def partner(
    stack: Stack,
    aws: dict[str, Any],
    sshd: servers.Sshd,
    ftp_servers: FtpServers,
    unique: str,
    peer_kind: str,
) -> AsyncIterator[Any]:
    """``await partner(**source settings)``: a source on the peer under test."""
    async with contextlib.AsyncExitStack() as closing:

        async def make(port: int | None = None, **settings: Any) -> Partner:
            if peer_kind == "sftp":
                peer = sftp_peer(sshd, unique, port)
            else:
                peer = ftp_peer(ftp_servers, peer_kind, unique)
            return await make_partner(stack, aws, closing, unique, peer, settings)

        yield make


@pytest.fixture
async def sftp_partner(
    stack: Stack, aws: dict[str, Any], sshd: servers.Sshd, unique: str
) -> AsyncIterator[Any]:
    """``await sftp_partner(port=..., **source settings)``: a source on the sshd
    (through ``port``, a proxy, when given)."""
    async with contextlib.AsyncExitStack() as closing:

        async def make(port: int | None = None, **settings: Any) -> Partner:
            peer = sftp_peer(sshd, unique, port)
            return await make_partner(stack, aws, closing, unique, peer, settings)

        yield make


async def make_partner(
    stack: Stack,
    aws: dict[str, Any],
    closing: contextlib.AsyncExitStack,
    unique: str,
    peer: Peer,
    settings: dict[str, Any],
) -> Partner:
    secret = f"{stack.name}/sync-partner"
    with contextlib.suppress(aws["secretsmanager"].exceptions.ResourceExistsException):
        await aws["secretsmanager"].create_secret(Name=secret, SecretString=json.dumps(peer.secret))
    landing_bucket = f"{stack.name}-landing"
    with contextlib.suppress(aws["s3"].exceptions.BucketAlreadyOwnedByYou):
        await aws["s3"].create_bucket(Bucket=landing_bucket)
    source = sources_yaml(
        {
            "id": f"partner-{unique}",
            "name": "Partner health plan",
            "partner_id": "H3001",
            "host": "127.0.0.1",
            "credentials": {"secret": secret},
            "landing": f"s3://{landing_bucket}/landing/",
            "audience": "process",
            "recursive": True,
            **peer.spec,
            **settings,
        }
    )
    secrets = SecretStore(aws["secretsmanager"])
    opener = ByProtocol(await installed_openers(closing, secrets))
    leases = Leases(aws["dynamodb"], f"{stack.name}-locks")
    ledger = ReceivedLedger(aws["dynamodb"], f"{stack.name}-received")
    fetch_queue = stack.outputs["SyncFetchQueueUrl"]
    publisher = EventPublisher(aws["sns"], stack.outputs["EventsTopicArn"])
    return Partner(
        stack=stack,
        aws=aws,
        folder=peer.folder,
        source=source,
        poll_=SourcePoll(
            leases=leases,
            ledger=ledger,
            opener=opener,
            fetches=CommandSender(aws["sqs"], fetch_queue),
            lease_seconds=60,
        ),
        fetch_=SourceFetch(
            leases=leases,
            ledger=ledger,
            opener=opener,
            stores=Stores(aws["s3"], 5 * MiB, 2),
            handoff=HandOff(publisher, ledger),
            lease_seconds=60,
        ),
        fetch_queue=fetch_queue,
        ledger=ledger,
        landing_bucket=landing_bucket,
    )


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


async def test_a_new_file_is_copied_once_and_handed_off(
    partner: Any, stack: Stack, aws: Any
) -> None:
    events = await subscribe_events(aws, stack)
    p: Partner = await partner(stability={"settle_seconds": 0})
    p.write("claims/2026-12.csv", b"member,amount\n1,10\n")

    assert await p.sync() == [Outcome.STORED]
    assert await p.sync() == [], "an unchanged file is not fetched again"

    landed = await p.landed()
    assert list(landed.values()) == [b"member,amount\n1,10\n"]
    (key,) = landed
    digest = sha(b"member,amount\n1,10\n")
    assert key.startswith(f"landing/{p.source.id}/claims/2026-12.csv/")
    assert key.endswith(f"--{digest[:16]}/2026-12.csv")
    (version,) = await p.ledger.versions(p.source.id, "claims/2026-12.csv")
    assert (version.sha256, version.size, version.outcome) == (digest, 19, "stored")
    assert version.uri == f"s3://{p.landing_bucket}/{key}"
    assert await p.staged() == {}
    assert await p.unfinished_uploads() == []

    received = [json.loads(m["Body"]) for m in await drain(aws["sqs"], events)]
    assert [(e["kind"], e["s3_uri"], e["sha256"], e["audience"]) for e in received] == [
        ("file.received", version.uri, digest, "process")
    ]


async def test_a_rewritten_file_is_a_new_version_and_the_old_is_kept(partner: Any) -> None:
    p: Partner = await partner(stability={"settle_seconds": 0})
    p.write("report.txt", b"first version", mtime=time.time() - 3600)
    assert await p.sync() == [Outcome.STORED]
    p.write("report.txt", b"second version, longer", mtime=time.time() - 60)
    assert await p.sync() == [Outcome.STORED]

    assert sorted((await p.landed()).values()) == [b"first version", b"second version, longer"]
    versions = await p.ledger.versions(p.source.id, "report.txt")
    assert [v.sha256 for v in versions] == [sha(b"first version"), sha(b"second version, longer")]


async def test_same_content_with_a_new_time_is_seen_not_stored(partner: Any) -> None:
    p: Partner = await partner(stability={"settle_seconds": 0})
    p.write("daily.csv", b"same bytes", mtime=time.time() - 7200)
    assert await p.sync() == [Outcome.STORED]
    p.write("daily.csv", b"same bytes", mtime=time.time() - 60)  # rewritten, same content

    assert await p.sync() == [Outcome.SEEN]
    assert await p.sync() == [], "the new time is now the stored one"
    assert len(await p.landed()) == 1
    (version,) = await p.ledger.versions(p.source.id, "daily.csv")
    assert version.times_seen == 2


async def test_a_file_deleted_on_the_server_is_marked_and_our_copy_kept(partner: Any) -> None:
    p: Partner = await partner(stability={"settle_seconds": 0})
    p.write("gone.csv", b"short-lived")
    assert await p.sync() == [Outcome.STORED]
    (p.folder / "gone.csv").unlink()

    report = await p.poll()
    assert report.deleted == ["gone.csv"]
    state = await p.ledger.state(p.source.id, "gone.csv")
    assert state is not None
    assert state.status is PathStatus.SOURCE_DELETED
    assert state.deleted_at is not None
    assert list((await p.landed()).values()) == [b"short-lived"]
    assert (await p.poll()).deleted == [], "marked once"


@pytest.mark.parametrize("peer_kind", ["sftp", "pyftpdlib"])
async def test_after_copy_delete_removes_the_file_once_its_copy_is_recorded(
    partner: Any,
) -> None:
    p: Partner = await partner(stability={"settle_seconds": 0}, after_copy="delete")
    p.write("in/claims.csv", b"member,amount\n7,70\n")
    p.write("in/unsettled.csv.part", b"still being written")

    assert await p.sync() == [Outcome.STORED]
    assert sorted(path.name for path in (p.folder / "in").iterdir()) == ["unsettled.csv.part"]
    assert list((await p.landed()).values()) == [b"member,amount\n7,70\n"]
    (version,) = await p.ledger.versions(p.source.id, "in/claims.csv")
    assert version.handed_off_at is not None, "removed only after the hand-off"
    assert (await p.poll()).deleted == ["in/claims.csv"], "the next poll notes it gone"


@pytest.mark.parametrize("peer_kind", ["sftp", "pyftpdlib"])
async def test_a_retried_fetch_removes_only_the_copy_it_stored(partner: Any) -> None:
    """A fetch retried after its removal failed (the copy already recorded)
    removes the file if it is still the stored one, never a newer version."""
    p: Partner = await partner(stability={"settle_seconds": 0}, after_copy="delete")
    mtime = time.time() - 600
    p.write("claims.csv", b"first", mtime=mtime)
    await p.poll()
    (message,) = await drain(p.aws["sqs"], p.fetch_queue, settle=0.3)
    request = FetchRequested.model_validate_json(message["Body"])
    assert await p.fetch_.run(p.source, request) == Outcome.STORED

    p.write("claims.csv", b"first", mtime=mtime)  # as if the removal had failed
    assert await p.fetch_.run(p.source, request) == Outcome.ALREADY
    assert not (p.folder / "claims.csv").exists(), "the stored copy's file removed on retry"

    p.write("claims.csv", b"newer", mtime=mtime + 60)
    assert await p.fetch_.run(p.source, request) == Outcome.ALREADY
    assert (p.folder / "claims.csv").read_bytes() == b"newer", "a newer version is kept"


async def test_a_growing_file_waits_until_it_settles_then_is_copied_whole(partner: Any) -> None:
    p: Partner = await partner(stability={"settle_seconds": 1})
    p.write("big.dat", b"a" * 1000, mtime=time.time() - 30)
    assert await p.sync() == [], "first look: settling"
    with (p.folder / "big.dat").open("ab") as growing:
        growing.write(b"b" * 1000)
    os.utime(p.folder / "big.dat", (time.time() - 20, time.time() - 20))
    assert await p.sync() == [], "changed since the last look: settling again"

    async def copied() -> list[Outcome]:
        return await p.sync()

    assert await eventually(copied, timeout=10, interval=0.3, what="a settled copy") == [
        Outcome.STORED
    ]
    assert list((await p.landed()).values()) == [b"a" * 1000 + b"b" * 1000]


async def test_temporary_names_and_done_markers(partner: Any) -> None:
    p: Partner = await partner(stability={"settle_seconds": 0, "done_marker": "{name}.done"})
    p.write("upload.csv.part", b"in progress")
    p.write("ready.csv", b"ready")
    assert await p.sync() == [], "no marker yet, and a temporary name"
    p.write("ready.csv.done", b"")
    assert await p.sync() == [Outcome.STORED]
    assert list((await p.landed()).values()) == [b"ready"]


async def test_a_server_down_for_two_polls_then_up_loses_nothing(
    sftp_partner: Any, sshd: servers.Sshd
) -> None:
    proxy = CuttingProxy(sshd.port)
    await proxy.up()
    p: Partner = await sftp_partner(port=proxy.port, stability={"settle_seconds": 0})
    p.write("one.csv", b"1")
    assert await p.sync() == [Outcome.STORED]
    await proxy.down()
    p.write("two.csv", b"2")
    for _ in range(2):
        with pytest.raises(TransientError):
            await p.poll()
    await proxy.up()
    try:
        assert await p.sync() == [Outcome.STORED]
    finally:
        await proxy.down()
    assert sorted((await p.landed()).values()) == [b"1", b"2"]


async def test_a_connection_cut_mid_file_leaves_nothing_partial(
    sftp_partner: Any, sshd: servers.Sshd
) -> None:
    body = os.urandom(12 * MiB)
    proxy = CuttingProxy(sshd.port, cut_after=6 * MiB)
    await proxy.up()
    try:
        p: Partner = await sftp_partner(port=proxy.port, stability={"settle_seconds": 0})
        p.write("large.bin", body)
        # The listing and the fetch share the first (cut) connection's pool.
        await p.poll()
        (message,) = await drain(p.aws["sqs"], p.fetch_queue, settle=0.3)
        request = FetchRequested.model_validate_json(message["Body"])
        with pytest.raises(TransientError):
            await p.fetch_.run(p.source, request)
        assert proxy.cuts == 1
        assert await p.landed() == {}
        assert await p.staged() == {}
        assert await p.unfinished_uploads() == []
        assert await p.fetch_.run(p.source, request) == Outcome.STORED
    finally:
        await proxy.down()
    assert list((await p.landed()).values()) == [body]


async def test_two_replicas_store_each_version_once(
    partner: Any, stack: Stack, aws: Any, services: InProcessServices, tmp_path: Path
) -> None:
    p: Partner = await partner(stability={"settle_seconds": 0})
    bodies = {f"batch/file-{i}.csv": f"row {i}\n".encode() * 1000 for i in range(6)}
    for name, body in bodies.items():
        p.write(name, body)
    routes = tmp_path / "routes.yaml"
    routes.write_text(json.dumps({"version": 1, "sources": [p.source.model_dump(mode="json")]}))
    for _ in range(2):
        services.start(
            run_provider_sync,
            ProviderSyncSettings(
                stack=stack.name,
                routes_uri=str(routes),
                environment="test",
                receive_wait_seconds=1,
                busy_retry_seconds=1,
            ),
        )
    polls = CommandSender(aws["sqs"], stack.outputs["SyncPollQueueUrl"])
    await polls.send_many([PollRequested(source_id=p.source.id, force=True)] * 4)

    async def all_stored() -> bool:
        versions = [v async for v in _versions(p)]
        return len(versions) == len(bodies) and all(v.handed_off_at for v in versions)

    await eventually(all_stored, timeout=90, interval=0.5, what="every file stored")
    await services.close()
    landed = await p.landed()
    assert sorted(landed.values()) == sorted(bodies.values()), "each version stored once"
    assert await p.staged() == {}


async def _versions(p: Partner) -> AsyncIterator[Any]:
    for name in sorted({path for path in _all_paths(p.folder)}):
        for version in await p.ledger.versions(p.source.id, name):
            yield version


def _all_paths(folder: Path) -> list[str]:
    return [str(f.relative_to(folder)) for f in folder.rglob("*") if f.is_file()]


async def test_every_schedule_tick_reports_the_sources_overdue(
    sftp_partner: Any,
    stack: Stack,
    aws: Any,
    services: InProcessServices,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A source with no good poll in its last three intervals is overdue: one
    that polls well stops counting, one whose server is down keeps counting."""
    p: Partner = await sftp_partner(stability={"settle_seconds": 0})
    down = p.source.model_copy(update={"id": f"{p.source.id}-down", "port": free_port()})
    routes = tmp_path / "routes.yaml"
    sources = [s.model_dump(mode="json") for s in (p.source, down)]
    routes.write_text(json.dumps({"version": 1, "sources": sources}))
    services.start(
        run_provider_sync,
        ProviderSyncSettings(
            stack=stack.name, routes_uri=str(routes), environment="test", receive_wait_seconds=1
        ),
    )
    polls = CommandSender(aws["sqs"], stack.outputs["SyncPollQueueUrl"])
    reported: list[int] = []

    async def overdue_after_tick() -> list[int]:
        await polls.send(PollRequested())
        await eventually(
            lambda: _overdue_reported(capsys, reported, len(reported) + 1),
            timeout=30,
            what="SourcesOverdue",
        )
        return reported

    assert await overdue_after_tick() == [2], "neither source has been polled yet"
    await eventually(
        lambda: _polled(aws, stack, p.source.id), timeout=30, what="a good poll of the first source"
    )
    assert (await overdue_after_tick())[-1] == 1, "the source whose server is down"
    await services.close()


async def _overdue_reported(
    capsys: pytest.CaptureFixture[str], reported: list[int], count: int
) -> bool:
    for line in capsys.readouterr().err.splitlines():
        with contextlib.suppress(ValueError):
            document = json.loads(line)
            if document.get("event") == "metric.SourcesOverdue":
                reported.append(document["SourcesOverdue"])
    return len(reported) >= count


async def _polled(aws: Any, stack: Stack, source_id: str) -> bool:
    """Whether the source's poll lease records a good poll (read, not taken)."""
    item = await aws["dynamodb"].get_item(
        TableName=f"{stack.name}-locks", Key={"name": {"S": f"sync-poll#{source_id}"}}
    )
    return "polledAt" in item.get("Item", {})
