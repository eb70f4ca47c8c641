"""Provider sync's two benchmarks, against pyftpdlib and moto (slow; run
with ``-m slow -s`` to see the figures, which docs/provider-sync.md quotes):

* one poll over a server with 10,000 unchanged files: AWS requests by
  operation, and seconds. Unchanged files must cost no write and no message;
* 1 GiB from FTP into S3 through a fetch, beside ``rclone copy`` of the same
  file to the same moto, in one run: seconds, MB/s, and this process's
  peak RSS growth for the fetch.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor_cli.localstack import servers
from conveyor_provider_sync.fetch import Outcome
from conveyor_shared.ledger.dynamo import now_iso, to_item
from conveyor_shared.ledger.received import PathState
from conveyor_shared.sync.detect import look_of
from tests.ftp_servers import FtpServers, writable_directory
from tests.integration.test_provider_sync import Partner, Peer, make_partner
from tests.support import Stack, drain

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

FILES = 10_000
GiB = 1024**3


def ftp_peer(ftp_servers: FtpServers, unique: str, name: str) -> tuple[Peer, Any]:
    server = ftp_servers.get("pyftpdlib")
    folder = writable_directory(server, f"{name}-{unique}")
    spec = {
        "protocol": "ftp",
        "port": server.port,
        "username": server.username,
        "directory": folder.name,
        "ftp": {"io_timeout": 60, "connect_timeout": 10},
    }
    return Peer(folder, {"password": server.password}, spec), server


class RequestCount:
    """Counts every AWS request the given clients make, by service and operation."""

    def __init__(self, clients: dict[str, Any]) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        for client in clients.values():
            client.meta.events.register("before-call.*.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.counts[f"{model.service_model.service_name}:{model.name}"] += 1

    def reset(self) -> None:
        self.counts.clear()


@pytest.fixture
def count(aws: dict[str, Any]) -> Iterator[RequestCount]:
    counter = RequestCount(aws)
    yield counter
    for client in aws.values():
        client.meta.events.unregister("before-call.*.*", counter._count)


async def seed_as_stored(p: Partner, aws: dict[str, Any]) -> None:
    """Record every listed file as copied already, as ten thousand earlier
    fetches would have left its state (written in batches, to be quick)."""
    now = now_iso()
    items = []
    async for info in _listing(p):
        look = look_of(info)
        state = PathState(
            source=p.source.id,
            path=info.path,
            look=look,
            looked_at=now,
            stored=look,
            stored_sha256=hashlib.sha256(info.path.encode()).hexdigest(),
            stored_uri=f"s3://{p.landing_bucket}/seeded/{info.path}",
            stored_first_seen=now,
        )
        attributes = state.model_dump(by_alias=True, exclude_none=True, mode="json")
        items.append(to_item({**attributes, "key": f"path#{info.path}"}))
    for start in range(0, len(items), 25):
        batch = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        pending = {p.ledger.table: batch}
        while pending:
            response = await aws["dynamodb"].batch_write_item(RequestItems=pending)
            pending = response.get("UnprocessedItems") or {}


async def _listing(p: Partner) -> Any:
    async with p.poll_._opener.open(p.source) as remote:
        async for info in remote.list():
            yield info


async def test_one_poll_over_ten_thousand_unchanged_files(
    stack: Stack,
    aws: dict[str, Any],
    ftp_servers: FtpServers,
    unique: str,
    count: RequestCount,
) -> None:
    peer, _ = ftp_peer(ftp_servers, unique, "many")
    names = [f"file-{i:05d}.csv" for i in range(FILES)]
    for name in names:
        (peer.folder / name).write_bytes(name.encode())
    async with contextlib.AsyncExitStack() as closing:
        p = await make_partner(
            stack, aws, closing, unique, peer, {"stability": {"settle_seconds": 0}}
        )
        await seed_as_stored(p, aws)
        count.reset()
        started = time.perf_counter()
        report = await p.poll()
        seconds = time.perf_counter() - started
        requests = dict(sorted(count.counts.items()))
        # Where the time goes: the listing alone, then the ledger read alone.
        started = time.perf_counter()
        listed = [info async for info in _listing(p)]
        list_seconds = time.perf_counter() - started
        started = time.perf_counter()
        known = [state async for state in p.ledger.states(p.source.id)]
        ledger_seconds = time.perf_counter() - started
    verdicts = collections.Counter(d.verdict.value for d in report.decisions)
    figures = {
        "files": report.listed,
        "seconds": round(seconds, 2),
        "of_which_listing_seconds": round(list_seconds, 2),
        "of_which_ledger_read_seconds": round(ledger_seconds, 2),
        "aws_requests": sum(requests.values()),
        "by_operation": requests,
        "verdicts": dict(verdicts),
    }
    print("\nprovider-sync poll, 10,000 unchanged files:", json.dumps(figures))
    assert report.listed == len(listed) == len(known) == FILES
    assert verdicts == {"unchanged": FILES}
    assert report.fetches == []
    writes = {op: n for op, n in requests.items() if op.endswith(("PutItem", "SendMessageBatch"))}
    assert writes == {}, "an unchanged file costs no write and no message"
    assert await drain(aws["sqs"], stack.outputs["SyncFetchQueueUrl"], settle=0.3) == []


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rclone_copy(server: Any, peer: Peer, moto: servers.Moto, bucket: str, name: str) -> float:
    """``rclone copy`` of the same file from the same FTP server to the same
    moto; remotes from the environment (``AWS_CA_BUNDLE`` breaks rclone's S3)."""
    obscured = subprocess.run(
        ["rclone", "obscure", server.password], capture_output=True, text=True, check=True
    ).stdout.strip()
    remotes = {
        "RCLONE_CONFIG_PARTNER_TYPE": "ftp",
        "RCLONE_CONFIG_PARTNER_HOST": "127.0.0.1",
        "RCLONE_CONFIG_PARTNER_PORT": str(server.port),
        "RCLONE_CONFIG_PARTNER_USER": server.username,
        "RCLONE_CONFIG_PARTNER_PASS": obscured,
        "RCLONE_CONFIG_MOTO_TYPE": "s3",
        "RCLONE_CONFIG_MOTO_PROVIDER": "Other",
        "RCLONE_CONFIG_MOTO_ENDPOINT": moto.url,
        "RCLONE_CONFIG_MOTO_ENV_AUTH": "false",
        "RCLONE_CONFIG_MOTO_ACCESS_KEY_ID": servers.LOCAL_AWS_ENV["AWS_ACCESS_KEY_ID"],
        "RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY": servers.LOCAL_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        "RCLONE_CONFIG_MOTO_REGION": "us-east-1",
        "RCLONE_CONFIG_MOTO_FORCE_PATH_STYLE": "true",
    }
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"} | remotes
    started = time.perf_counter()
    done = subprocess.run(
        [
            "rclone",
            "copy",
            "--retries",
            "1",
            # One PUT: rclone's multipart upload from FTP gets 400 Bad Request from moto.
            "--s3-upload-cutoff",
            "2G",
            f"partner:{peer.folder.name}/{name}",
            f"moto:{bucket}/rclone/",
        ],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return time.perf_counter() - started


@pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone is not installed")
async def test_one_gib_from_ftp_into_s3_beside_rclone(
    stack: Stack,
    aws: dict[str, Any],
    ftp_servers: FtpServers,
    moto: servers.Moto,
    unique: str,
) -> None:
    peer, server = ftp_peer(ftp_servers, unique, "large")
    name = "large.bin"
    digest = hashlib.sha256()
    with (peer.folder / name).open("wb") as out:
        for _ in range(GiB // (16 * 1024**2)):
            block = os.urandom(16 * 1024**2)
            digest.update(block)
            out.write(block)
    async with contextlib.AsyncExitStack() as closing:
        p = await make_partner(
            stack, aws, closing, unique, peer, {"stability": {"settle_seconds": 0}}
        )
        await p.poll()
        rss_before = peak_rss_mb()
        started = time.perf_counter()
        assert await p.fetch_all() == [Outcome.STORED]
        ours = time.perf_counter() - started
        rss_growth = peak_rss_mb() - rss_before
    (version,) = await p.ledger.versions(p.source.id, name)
    assert version.sha256 == digest.hexdigest()
    assert version.size == GiB
    theirs = await asyncio.to_thread(rclone_copy, server, peer, moto, p.landing_bucket, name)
    head = await aws["s3"].head_object(Bucket=p.landing_bucket, Key=f"rclone/{name}")
    assert head["ContentLength"] == GiB
    figures = {
        "bytes": GiB,
        "conveyor_seconds": round(ours, 1),
        "conveyor_mb_s": round(GiB / ours / 1e6, 1),
        "conveyor_peak_rss_growth_mb": round(rss_growth, 1),
        "rclone_seconds": round(theirs, 1),
        "rclone_mb_s": round(GiB / theirs / 1e6, 1),
    }
    print("\nprovider-sync 1 GiB FTP -> S3 beside rclone:", json.dumps(figures))
