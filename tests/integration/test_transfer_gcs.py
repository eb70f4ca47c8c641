"""transfer-gcs against the real path (D6, D7): a file put into a
pick-up in moto reaches gcp-storage-emulator through the scanner and the GCS
transfer service, both real processes, and the ledger says how it went.

A dropped connection is a real one: a TCP proxy in front of the emulator cuts
the upload once, mid-chunk, and counts what was sent after the cut. Memory is
measured on the process itself (psutil) while 256 MiB go through ``copy()``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psutil
import pytest

from conveyor_cli.localstack import servers
from conveyor_cli.localstack.processes import ManagedProcess
from conveyor_shared.backends.gcs import GcsDestinationFactory
from conveyor_shared.config.models import GcsDestination
from conveyor_shared.ledger.dynamo import from_item
from conveyor_shared.secrets import SecretStore
from conveyor_shared.transfer import ObjectInfo, copy
from tests.support import Stack, eventually, json_lines, service_process, write_routes

MiB = 1024 * 1024
CLIENT = "H4001"

#: Shaped like a service-account key; the emulator never asks for a token, but
#: the service still reads and validates the secret the route names.
FAKE_KEY = {
    "type": "service_account",
    "project_id": "conveyor-test",
    "client_email": "conveyor@conveyor-test.iam.gserviceaccount.com",
    "private_key": "-----BEGIN PRIVATE KEY-----\nnot-a-real-key\n-----END PRIVATE KEY-----\n",
    "token_uri": "https://oauth2.googleapis.com/token",
}


# -- the emulator, seen through its own JSON API -------------------------------------


async def create_bucket(gcs: servers.GcsEmulator, bucket: str) -> None:
    async with httpx.AsyncClient(base_url=gcs.host) as http:
        created = await http.post(
            "/storage/v1/b", params={"project": "conveyor"}, json={"name": bucket}
        )
        created.raise_for_status()


async def read_object(
    gcs: servers.GcsEmulator, bucket: str, name: str
) -> tuple[bytes, dict[str, Any]]:
    url = f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}"
    async with httpx.AsyncClient(base_url=gcs.host, timeout=120) as http:
        resource = (await http.get(url)).raise_for_status().json()
        body = (await http.get(url, params={"alt": "media"})).raise_for_status().content
    return body, resource


def b64_md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324


# -- a TCP proxy that drops one connection ---------------------------------------------


class CuttingProxy:
    """Forwards 127.0.0.1 connections to ``upstream_port``, counting the bytes
    clients send; once ``cut_after`` of them have passed, it forwards no more
    of that connection, closes it towards the server (which thus sees a
    truncated request) and resets it towards the client."""

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.sent = 0
        self.sent_after_cut = 0
        self.cut = False
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            await asyncio.gather(
                self._upload(client_r, upstream_w, client_w),
                self._download(upstream_r, client_w),
                return_exceptions=True,
            )
            upstream_w.close()
        finally:
            client_w.close()
            self._handlers.discard(task)

    async def _upload(
        self,
        client_r: asyncio.StreamReader,
        upstream_w: asyncio.StreamWriter,
        client_w: asyncio.StreamWriter,
    ) -> None:
        while data := await client_r.read(64 * 1024):
            if self.cut:
                self.sent_after_cut += len(data)
            elif self.sent + len(data) >= self.cut_after:
                upstream_w.write(data[: self.cut_after - self.sent])
                await upstream_w.drain()
                self.sent, self.cut = self.cut_after, True
                upstream_w.close()
                client_w.transport.abort()
                return
            else:
                self.sent += len(data)
            upstream_w.write(data)
            await upstream_w.drain()
        upstream_w.close()

    @staticmethod
    async def _download(upstream_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        while data := await upstream_r.read(64 * 1024):
            client_w.write(data)
            await client_w.drain()
        client_w.close()


# -- the pipeline ------------------------------------------------------------------------


async def route_to(aws: dict[str, Any], stack: Stack, tmp_path: Path, bucket: str) -> Path:
    secret = f"{stack.name}/gcs-key"
    await aws["secretsmanager"].create_secret(Name=secret, SecretString=json.dumps(FAKE_KEY))
    return write_routes(
        tmp_path / "routes.yaml",
        [
            {
                "name": "GCS client",
                "client_id": CLIENT,
                "contacts": ["ops@example.com"],
                "notify": False,
                "pickup": f"s3://{stack.pickup_bucket}/{CLIENT}/",
                "destination": {
                    "type": "gcs",
                    "bucket": bucket,
                    "prefix": "inbound/",
                    "chunk_mib": 1,
                    "credentials": {"secret": secret},
                },
            }
        ],
    )


@contextlib.contextmanager
def pipeline(stack: Stack, routes: Path, tmp_path: Path, storage_host: str) -> Iterator[None]:
    """The scanner and transfer-gcs as real processes, GCS reached at ``storage_host``."""
    env = stack.service_env(
        routes, CONVEYOR_BATCH_WINDOW_SECONDS="0.2", STORAGE_EMULATOR_HOST=storage_host
    )
    procs: list[ManagedProcess] = [
        service_process(module, tmp_path / f"{module}.log", env)
        for module in ("conveyor_scanner", "conveyor_transfer_gcs")
    ]
    try:
        yield
    finally:
        for proc in procs:
            proc.stop()


async def settled(aws: dict[str, Any], stack: Stack, timeout: float) -> dict[str, Any]:
    """The client's ledger entry, once it is ``success`` or ``fail``."""

    async def entry() -> dict[str, Any] | None:
        items = (
            await aws["dynamodb"].query(
                TableName=f"{stack.name}-files",
                KeyConditionExpression="clientId = :c",
                ExpressionAttributeValues={":c": {"S": CLIENT}},
                ConsistentRead=True,
            )
        )["Items"]
        entries = [from_item(item) for item in items]
        return entries[0] if entries and entries[0]["status"] in ("success", "fail") else None

    found = await eventually(entry, timeout=timeout, what="a settled ledger entry")
    assert found is not None
    return found


def transfer_events(tmp_path: Path, event: str) -> list[dict[str, Any]]:
    return [
        e for e in json_lines(tmp_path / "conveyor_transfer_gcs.log") if e.get("event") == event
    ]


async def test_file_reaches_gcs_with_md5_verified(
    stack: Stack, aws: dict[str, Any], gcs: servers.GcsEmulator, tmp_path: Path, unique: str
) -> None:
    bucket = f"client-{unique}"
    await create_bucket(gcs, bucket)
    routes = await route_to(aws, stack, tmp_path, bucket)
    body = os.urandom(3 * MiB + 5)  # three streamed chunks and a last one of 5 bytes
    with pipeline(stack, routes, tmp_path, gcs.host):
        await aws["s3"].put_object(
            Bucket=stack.pickup_bucket, Key=f"{CLIENT}/claims 2026-11.bin", Body=body
        )
        entry = await settled(aws, stack, timeout=90)

    assert entry["status"] == "success", entry.get("lastError")
    assert entry["sendAttempts"] == 1
    assert entry["deliveredTo"] == f"gs://{bucket}/inbound/claims 2026-11.bin"
    stored, resource = await read_object(gcs, bucket, "inbound/claims 2026-11.bin")
    assert stored == body
    assert resource["md5Hash"] == b64_md5(body)
    [delivered] = transfer_events(tmp_path, "transfer.delivered")
    assert delivered["client_id"] == CLIENT
    # S3's ETag (the source's MD5) compared with GCS's md5Hash, end to end.
    assert delivered["verified"] == ["md5:destination"]


async def test_dropped_connection_resumes_from_committed_offset(
    stack: Stack, aws: dict[str, Any], gcs: servers.GcsEmulator, tmp_path: Path, unique: str
) -> None:
    bucket = f"client-{unique}"
    await create_bucket(gcs, bucket)
    routes = await route_to(aws, stack, tmp_path, bucket)
    body = os.urandom(4 * MiB + 1234)
    async with CuttingProxy(gcs.port, cut_after=2 * MiB + MiB // 2) as proxy:
        with pipeline(stack, routes, tmp_path, proxy.url):
            await aws["s3"].put_object(
                Bucket=stack.pickup_bucket, Key=f"{CLIENT}/roster.bin", Body=body
            )
            entry = await settled(aws, stack, timeout=90)

    assert proxy.cut, "the proxy never cut the upload"
    assert entry["status"] == "success", entry.get("lastError")
    # Resumed inside the same attempt, not redelivered and sent again from zero:
    assert entry["sendAttempts"] == 1
    assert proxy.sent_after_cut < len(body) - 2 * MiB, (
        f"{proxy.sent_after_cut} bytes sent after the cut of a {len(body)}-byte file"
    )
    stored, resource = await read_object(gcs, bucket, "inbound/roster.bin")
    assert stored == body
    assert resource["md5Hash"] == b64_md5(body)
    [resumed] = transfer_events(tmp_path, "gcs.upload_resumed")
    assert 2 * MiB <= resumed["committed"] < 2 * MiB + MiB // 2


async def test_missing_bucket_fails_permanently(
    stack: Stack, aws: dict[str, Any], gcs: servers.GcsEmulator, tmp_path: Path, unique: str
) -> None:
    routes = await route_to(aws, stack, tmp_path, f"gone-{unique}")
    with pipeline(stack, routes, tmp_path, gcs.host):
        await aws["s3"].put_object(
            Bucket=stack.pickup_bucket, Key=f"{CLIENT}/report.csv", Body=b"a,b\n1,2\n"
        )
        entry = await settled(aws, stack, timeout=60)

    assert entry["status"] == "fail"
    assert entry["errorKind"] == "permanent"
    assert entry["sendAttempts"] == 1
    assert f"gs://gone-{unique}/inbound/report.csv" in entry["lastError"]
    assert "bucket does not exist" in entry["lastError"]


# -- memory and speed, through copy() ----------------------------------------------------


class GeneratedSource:
    """One object of ``size`` bytes made up on the fly, handed out 1 MiB at a
    time as a fresh buffer each time (as a network read would be)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._block = os.urandom(MiB)

    async def stat(self, path: str) -> ObjectInfo:
        return ObjectInfo(path, self.size)

    @contextlib.asynccontextmanager
    async def open(self, path: str) -> AsyncIterator[AsyncIterator[bytes]]:
        yield self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        for offset in range(0, self.size, MiB):
            yield offset.to_bytes(8, "big") + self._block[8 : min(MiB, self.size - offset)]

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        yield await self.stat("generated.bin")


class PeakRss:
    """The most this process's resident memory grew above where it started."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.baseline = self.peak = self._process.memory_info().rss
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self._process.memory_info().rss)
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> PeakRss:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return float(self.peak - self.baseline) / 1e6


@contextlib.asynccontextmanager
async def gcs_destination(
    gcs: servers.GcsEmulator, bucket: str, chunk_mib: int
) -> AsyncIterator[Any]:
    factory = GcsDestinationFactory(SecretStore(None), api_root=gcs.host)
    try:
        spec = GcsDestination(type="gcs", bucket=bucket, prefix="big/", chunk_mib=chunk_mib)
        yield await factory.open(spec)
    finally:
        await factory.close()


@pytest.mark.slow
async def test_memory_stays_flat_for_256_mib(gcs: servers.GcsEmulator, unique: str) -> None:
    bucket = f"mem-{unique}"
    await create_bucket(gcs, bucket)
    size = 256 * MiB
    source = GeneratedSource(size)
    chunk_mib = GcsDestination.model_fields["chunk_mib"].default  # the production default
    async with gcs_destination(gcs, bucket, chunk_mib) as destination, PeakRss() as rss:
        result = await copy(source, await source.stat("big.bin"), destination, "big.bin")
    assert result.size == size
    assert result.verified_by == "md5:received"  # GCS's MD5 against what was read
    assert rss.growth_mb < 100, f"RSS grew by {rss.growth_mb:.0f} MB for a {size // MiB} MiB file"
