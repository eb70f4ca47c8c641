"""The status API over a large ledger: p50/p95 of the file list and the file
history endpoints, and the DynamoDB requests each page costs.

``uv run python -m bench.api [--entries 20000] [--clients 10] [--requests 20]``
starts moto with its request log on (``CONVEYOR_MOTO_REQUEST_LOG``), deploys
deploy/conveyor.yaml, writes ``--entries`` ledger entries (one per file, as
the scanner and workers leave them: mostly ``success``, some ``fail``, a few
in flight, spread over 30 days and ``--clients`` clients), starts the API as
a process (its metrics refresher off, so only the measured requests reach
moto) and times sequential requests over HTTP:

* ``GET /files?client=C`` (first pages), and following pages through ``nextCursor``;
* ``GET /files?status=fail`` across clients;
* ``GET /files?client=C&status=fail`` (a filter inside the client's index);
* ``GET /files/{client}/{checksum}`` for random entries (its history).

DynamoDB requests per page are counted in moto's request log between one
request's start and its answer. Prints a Markdown table (docs/benchmarks.md);
``--output`` also writes it as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import yaml

from bench.requests import RequestLog
from bench.standins import running_stand_ins
from conveyor_cli.localstack.deploy import deploy_stack
from conveyor_cli.localstack.processes import ManagedProcess, free_port, wait_until
from conveyor_shared.ledger.dynamo import iso_time, to_item
from conveyor_shared.ledger.models import Attempt, FileEntry, FileStatus

STACK = "benchapi"
KEY = "cvy_bench-read-key"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def entry(number: int, clients: int, now: datetime, rng: random.Random) -> FileEntry:
    client = f"H{9000 + number % clients}"
    roll = rng.random()
    status = (
        FileStatus.PROCESSING
        if roll < 0.02
        else FileStatus.FAIL
        if roll < 0.1
        else FileStatus.SUCCESS
    )
    when = iso_time(now - timedelta(seconds=rng.uniform(0, 30 * 86400)))
    name = f"claims-{number:06d}.csv"
    failed = [Attempt(at=when, outcome="failed", error="connection refused")]
    final = Attempt(at=when, outcome=status.value, verified_by="md5:destination")
    return FileEntry(
        client_id=client,
        content_id=f"sha256:{hashlib.sha256(name.encode()).hexdigest()}",
        timestamp=when,
        status=status,
        file_path=f"s3://{STACK}-pickup/{client}/{name}",
        file_name=name,
        send_attempts=1 if status is FileStatus.SUCCESS else 3,
        active=status is FileStatus.PROCESSING,
        job_id=f"{client}-job-{number // 50}",
        route_name=f"client {client}",
        size=rng.randint(1_000, 5_000_000),
        source_bucket=f"{STACK}-pickup",
        source_key=f"{client}/{name}",
        source_version=when,
        last_error="connection refused" if status is FileStatus.FAIL else None,
        error_kind="transient" if status is FileStatus.FAIL else None,
        delivered_to=f"sftp://partner/{name}" if status is FileStatus.SUCCESS else None,
        active_since=when if status is FileStatus.PROCESSING else None,
        verified_by="md5:destination" if status is FileStatus.SUCCESS else None,
        attempts=None
        if status is FileStatus.PROCESSING
        else [*failed * (status is FileStatus.FAIL), final],
    )


def seed(dynamodb: Any, entries: Sequence[FileEntry]) -> None:
    table = f"{STACK}-files"
    for start in range(0, len(entries), 25):
        batch = [
            {"PutRequest": {"Item": to_item(e.to_attributes())}}
            for e in entries[start : start + 25]
        ]
        pending: dict[str, Any] = {table: batch}
        while pending:
            pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


def routes_file(path: Path, clients: int) -> Path:
    routes = [
        {
            "name": f"client H{9000 + i}",
            "client_id": f"H{9000 + i}",
            "contacts": ["ops@example.com"],
            "pickup": f"s3://{STACK}-pickup/H{9000 + i}/",
            "destination": {"type": "s3", "bucket": f"{STACK}-out"},
        }
        for i in range(clients)
    ]
    path.write_text(yaml.safe_dump({"version": 1, "routes": routes}, sort_keys=False))
    return path


def measure(
    client: httpx.Client, log: RequestLog, calls: Sequence[Callable[[], str]]
) -> dict[str, Any]:
    """Time each call (it returns the path it asked for) and count its DynamoDB requests."""
    seconds: list[float] = []
    requests: list[int] = []
    for call in calls:
        start_offset = log.offset()
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
        time.sleep(0.01)  # the log line is written before the answer; let it reach the file
        requests.append(sum(r["operation"].startswith("dynamodb.") for r in log.read(start_offset)))
    ordered = sorted(seconds)
    return {
        "requests": len(seconds),
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p95_ms": round(1000 * ordered[max(0, int(0.95 * len(ordered)) - 1)], 1),
        "dynamodb_per_page": round(statistics.mean(requests), 2),
        "dynamodb_max": max(requests),
    }


def scenarios(
    client: httpx.Client, entries: Sequence[FileEntry], clients: int, count: int, rng: random.Random
) -> dict[str, list[Callable[[], str]]]:
    def get(path: str, **params: Any) -> Callable[[], str]:
        def call() -> str:
            response = client.get(path, params=params)
            response.raise_for_status()
            return path

        return call

    cursors: list[str] = []
    for i in range(count):  # each client's second page starts where its first ended
        first = client.get("/files", params={"client": f"H{9000 + i % clients}", "limit": 50})
        cursors.append(first.json().get("nextCursor") or "")
    picks = [rng.choice(entries) for _ in range(count)]
    return {
        "GET /files?client=C (first page of 50)": [
            get("/files", client=f"H{9000 + i % clients}", limit=50) for i in range(count)
        ],
        "GET /files?client=C&cursor=... (next page of 50)": [
            get("/files", client=f"H{9000 + i % clients}", limit=50, cursor=c)
            for i, c in enumerate(cursors)
            if c
        ][:count],
        "GET /files?status=fail (across clients, 50)": [
            get("/files", status="fail", limit=50) for _ in range(count)
        ],
        "GET /files?client=C&status=fail (filtered, 50)": [
            get("/files", client=f"H{9000 + i % clients}", status="fail", limit=50)
            for i in range(count)
        ],
        "GET /files/{client}/{checksum} (history)": [
            get(f"/files/{e.client_id}/{e.content_id}") for e in picks
        ],
    }


def markdown(results: dict[str, dict[str, Any]], entries: int) -> str:
    lines = [
        f"Ledger of {entries} entries on the local stack (moto), sequential requests:",
        "",
        "| request | n | p50 ms | p95 ms | DynamoDB requests per page (mean / max) |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['requests']} | {r['p50_ms']} | {r['p95_ms']} | "
            f"{r['dynamodb_per_page']} / {r['dynamodb_max']} |"
        )
    return "\n".join(lines)


def run(options: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(7)
    state = Path(tempfile.mkdtemp(prefix="bench-api-"))
    log = RequestLog(state / "requests.jsonl")
    with running_stand_ins(state, gcs=False, request_log=log.path):
        session = boto3.Session(region_name="us-east-1")
        deploy_stack(session, STACK, {"PickupBucketName": f"{STACK}-pickup"})
        session.client("secretsmanager").create_secret(
            Name=f"{STACK}/api-keys",
            SecretString=json.dumps(
                {
                    "keys": [
                        {
                            "id": "bench",
                            "role": "read",
                            "sha256": hashlib.sha256(KEY.encode()).hexdigest(),
                        }
                    ]
                }
            ),
        )
        now = datetime.now(UTC)
        entries = [entry(i, options.clients, now, rng) for i in range(options.entries)]
        say(f"writing {len(entries)} ledger entries")
        seed(session.client("dynamodb"), entries)
        port = free_port()
        env = {
            **os.environ,
            "CONVEYOR_STACK": STACK,
            "CONVEYOR_ENVIRONMENT": "test",
            "CONVEYOR_ROUTES_URI": str(routes_file(state / "routes.yaml", options.clients)),
            "CONVEYOR_API_KEYS_SECRET": f"{STACK}/api-keys",
            "CONVEYOR_API_PORT": str(port),
            "CONVEYOR_METRICS_REFRESH_SECONDS": "0",
            "CONVEYOR_LOG_JSON": "true",
            "AWS_SDK_UA_APP_ID": "api",
        }
        api = ManagedProcess(
            "conveyor_api", [sys.executable, "-m", "conveyor_api"], state / "api.log", env=env
        ).start()
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: _answers(f"{url}/healthz"), 60, "the API")
            with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=60) as client:
                client.get("/files", params={"client": "H9000"}).raise_for_status()  # warm up
                results = {
                    name: measure(client, log, calls)
                    for name, calls in scenarios(
                        client, entries, options.clients, options.requests, rng
                    ).items()
                }
        finally:
            api.stop(grace=10)
    return {"entries": options.entries, "clients": options.clients, "results": results}


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.api",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--entries", type=int, default=20_000, help="ledger entries (20000)")
    parser.add_argument("--clients", type=int, default=10, help="clients (10)")
    parser.add_argument("--requests", type=int, default=20, help="requests per scenario (20)")
    parser.add_argument("--output", type=Path, help="also write the figures as JSON")
    options = parser.parse_args(argv)
    report = run(options)
    if options.output is not None:
        options.output.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report["results"], report["entries"]))


if __name__ == "__main__":
    main()
