"""AWS requests per delivered file, by Conveyor service and AWS operation.

``uv run python -m bench.requests [--files 500] [--kib 64] [--s3]`` starts the
stand-ins with moto's request log on (``CONVEYOR_MOTO_REQUEST_LOG``, see
``conveyor_cli.localstack.moto_server``), deploys the stack, runs the scanner,
the notifier and transfer-sftp (and transfer-s3 with ``--s3``) as processes,
each naming itself in its User-Agent (``AWS_SDK_UA_APP_ID``), and sends N
files through the whole pipeline once per destination. Between legs the
ledger tables are emptied, so every leg starts from the same tables.

A leg's window runs from the first upload until the last delivery and then
until no request but an empty long poll has come for ``QUIET_SECONDS``: every
request the files caused, the pick-up deletes, job finishes and the
notifier's work included. Empty receives (a consumer polling an idle queue)
depend on how long the services run, not on the files, so they are reported
apart, per second. Prints a Markdown table per leg (docs/benchmarks.md, "AWS
requests per delivered file"); ``--output`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.pipeline import Pipeline, Service
from bench.sources import put_objects, small_keys
from bench.standins import running_stand_ins

#: How long only empty long polls must have come before a leg counts as over.
QUIET_SECONDS = 5.0
#: Who made a request the services did not: the harness uploading the files.
UPLOADER = "uploader (the client; not in the total)"

#: List prices, USD (us-east-1, on-demand, beyond any free tier).
SQS_PER_REQUEST = 0.40 / 1e6
SNS_PER_REQUEST = 0.50 / 1e6
DYNAMODB_PER_WRU = 0.625 / 1e6
DYNAMODB_PER_RRU = 0.125 / 1e6
S3_PER_WRITE_CLASS = 0.005 / 1e3
S3_PER_READ_CLASS = 0.0004 / 1e3
SECRETS_PER_REQUEST = 0.05 / 1e4

#: S3 operations billed at the PUT/COPY/POST/LIST rate; DELETE is free, the rest
#: at the GET rate.
S3_WRITE_CLASS = {
    "PutObject",
    "CopyObject",
    "PostObject",
    "ListObjects",
    "ListObjectsV2",
    "ListObjectVersions",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
}
S3_FREE = {"DeleteObject", "DeleteObjects", "AbortMultipartUpload"}
DYNAMODB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"}
DYNAMODB_READS = {"GetItem", "BatchGetItem", "Query", "Scan"}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- DynamoDB item sizes ---------------------------------------------------------------


def _value_size(value: dict[str, Any]) -> int:
    """DynamoDB's size of one attribute value, by its documented rules."""
    kind, data = next(iter(value.items()))
    if kind == "S":
        return len(data.encode())
    if kind == "N":
        return len(data.lstrip("-").replace(".", "").strip("0")) // 2 + 2
    if kind == "B":
        return len(base64.b64decode(data)) if isinstance(data, str) else len(data)
    if kind in {"BOOL", "NULL"}:
        return 1
    if kind == "L":
        return 3 + sum(1 + _value_size(v) for v in data)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_size(v) for k, v in data.items())
    return sum(_value_size({kind[0]: member}) for member in data)  # SS, NS, BS


def item_size(item: dict[str, dict[str, Any]]) -> int:
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


# -- the pipeline ----------------------------------------------------------------------


@dataclass(frozen=True)
class Leg:
    name: str
    client_id: str
    service: str


def _tables(pipeline: Pipeline) -> list[str]:
    return [f"{pipeline.stack}-{name}" for name in ("files", "jobs", "locks", "notifications")]


def _scan(pipeline: Pipeline, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in pipeline.dynamodb.get_paginator("scan").paginate(TableName=table):
        items += page["Items"]
    return items


def table_item_sizes(pipeline: Pipeline) -> dict[str, list[int]]:
    """The size of every item in each ledger table, at the end of a leg."""
    return {table: [item_size(i) for i in _scan(pipeline, table)] for table in _tables(pipeline)}


def clear_ledger(pipeline: Pipeline) -> None:
    """Empty the ledger tables: every leg starts from the same (empty) tables."""
    for table in _tables(pipeline):
        schema = pipeline.dynamodb.describe_table(TableName=table)["Table"]["KeySchema"]
        names = [key["AttributeName"] for key in schema]
        for item in _scan(pipeline, table):
            key = {name: item[name] for name in names}
            pipeline.dynamodb.delete_item(TableName=table, Key=key)


class RequestLog:
    """moto's JSON lines, read from an offset."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def offset(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def read(self, start: int, end: int | None = None) -> list[dict[str, Any]]:
        with self.path.open("rb") as log:
            log.seek(start)
            data = log.read() if end is None else log.read(end - start)
        return [json.loads(line) for line in data.split(b"\n") if line.startswith(b"{")]

    def wait_until_quiet(self, start: int, timeout: float) -> int:
        """The offset once only empty long polls have come for ``QUIET_SECONDS``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            end = self.offset()
            busy = [r["time"] for r in self.read(start, end) if not _idle(r)]
            if not busy or time.time() - max(busy) >= QUIET_SECONDS:
                return end
            time.sleep(0.5)
        raise TimeoutError(f"requests did not stop within {timeout:.0f}s; see {self.path}")


def _idle(record: dict[str, Any]) -> bool:
    return bool(record["operation"] == "sqs.ReceiveMessage" and record.get("returned", 0) == 0)


def run_leg(
    pipeline: Pipeline, service: Service, log: RequestLog, leg: Leg, bodies: Sequence[bytes]
) -> dict[str, Any]:
    clear_ledger(pipeline)
    start = log.wait_until_quiet(log.offset(), 120)
    started = time.time()
    keys = small_keys(f"{leg.client_id}/", len(bodies))
    put_objects(pipeline.s3, pipeline.pickup_bucket, list(zip(keys, bodies, strict=True)))
    for _ in keys:
        service.wait_for(
            lambda e: e.get("event") == "transfer.delivered", 600, f"{leg.name} deliveries"
        )
    end = log.wait_until_quiet(start, 300)
    seconds = time.time() - started
    delivered = [e for e in pipeline.ledger(leg.client_id) if e["status"] == "success"]
    if len(delivered) != len(keys):
        raise RuntimeError(f"{len(delivered)} of {len(keys)} files are success in the ledger")
    sizes = table_item_sizes(pipeline)
    return summarise(log.read(start, end), len(keys), seconds, sizes)


# -- counting and pricing --------------------------------------------------------------


def _units_per_item(sizes: Sequence[int], unit: int) -> int:
    """Capacity units one item of a table costs: its largest item, rounded up."""
    return max(1, math.ceil(max(sizes, default=0) / unit))


def dynamodb_units(record: dict[str, Any], sizes: dict[str, list[int]]) -> tuple[float, float]:
    """(write units, read units) of one DynamoDB request, by DynamoDB's rules:
    a write costs 1 WRU per KB of the item, a transactional one twice that; a
    strongly consistent read 1 RRU per 4 KB, an eventually consistent one half,
    a transactional one twice. A failed conditional write is billed too."""
    operation = record["operation"].split(".", 1)[1]
    tables = record.get("tables", [])
    if operation in DYNAMODB_WRITES or operation == "TransactWriteItems":
        factor = 2.0 if operation.startswith("Transact") else 1.0
        return factor * sum(_units_per_item(sizes.get(t, []), 1024) for t in tables), 0.0
    if operation in DYNAMODB_READS or operation == "TransactGetItems":
        factor = 2.0 if operation.startswith("Transact") else 1.0
        if not operation.startswith("Transact") and not record.get("consistent"):
            factor = 0.5
        if operation in {"Query", "Scan"}:
            table = tables[0] if tables else ""
            read = record.get("returned", 0) * max(sizes.get(table, []), default=0)
            return 0.0, factor * max(1, math.ceil(read / 4096))
        return 0.0, factor * sum(_units_per_item(sizes.get(t, []), 4096) for t in tables)
    return 0.0, 0.0  # control plane (DescribeTable...): not billed per request


@dataclass
class Row:
    caller: str
    operation: str
    requests: int = 0
    wru: float = 0.0
    rru: float = 0.0

    def cost(self) -> tuple[float, str]:
        """USD for these requests, and what it is billed by."""
        service, name = self.operation.split(" ", 1)[0].split(".", 1)
        if service == "dynamodb":
            return self.wru * DYNAMODB_PER_WRU + self.rru * DYNAMODB_PER_RRU, "units"
        if service == "sqs":
            return self.requests * SQS_PER_REQUEST, "$0.40/M"
        if service == "sns":
            return self.requests * SNS_PER_REQUEST, "$0.50/M"
        if service == "secretsmanager":
            return self.requests * SECRETS_PER_REQUEST, "$0.05/10k"
        if service == "s3" and name in S3_FREE:
            return 0.0, "free"
        if service == "s3" and name in S3_WRITE_CLASS:
            return self.requests * S3_PER_WRITE_CLASS, "$0.005/1k"
        if service == "s3":
            return self.requests * S3_PER_READ_CLASS, "$0.0004/1k"
        return 0.0, "not priced"


def summarise(
    records: Iterable[dict[str, Any]], files: int, seconds: float, sizes: dict[str, list[int]]
) -> dict[str, Any]:
    rows: dict[tuple[str, str], Row] = {}
    idle: Counter[str] = Counter()
    for record in records:
        caller = record["caller"] or UPLOADER
        if _idle(record):
            idle[caller] += 1
            continue
        operation = record["operation"]
        if operation.startswith("dynamodb.") and record.get("tables"):
            tables = sorted({t.rsplit("-", 1)[1] for t in record["tables"]})
            operation += f" {'+'.join(tables)}"
        row = rows.setdefault((caller, operation), Row(caller, operation))
        row.requests += 1
        if record["operation"].startswith("dynamodb."):
            wru, rru = dynamodb_units(record, sizes)
            row.wru += wru
            row.rru += rru
    return {
        "files": files,
        "seconds": round(seconds, 1),
        "rows": sorted(rows.values(), key=lambda r: (r.caller == UPLOADER, r.caller, -r.requests)),
        "idle_receives": dict(idle),
        "largest_item_bytes": {t.rsplit("-", 1)[1]: max(s, default=0) for t, s in sizes.items()},
    }


def _money(value: float) -> str:
    return f"${value:.4f}"


def markdown(name: str, summary: dict[str, Any]) -> str:
    """The leg's table: requests, capacity units and cost per file and per 10,000 files."""
    files: int = summary["files"]
    lines = [
        f"{name}: {files} files, {summary['seconds']} s",
        "",
        "| service | operation | requests / file | WRU / file | RRU / file "
        "| per 10,000 files | arithmetic |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    totals: dict[str, float] = defaultdict(float)
    for row in summary["rows"]:
        per_file = row.requests / files
        cost, basis = row.cost()
        cost_10k = cost / files * 10_000
        if basis == "units":
            arithmetic = (
                f"({row.wru / files:.2f} WRU x $0.625 + {row.rru / files:.2f} RRU x $0.125)"
                " /M x 10,000"
            )
        else:
            arithmetic = f"{per_file:.2f} x 10,000 x {basis}"
        units = f"{row.wru / files:.2f} | {row.rru / files:.2f}" if basis == "units" else "- | -"
        lines.append(
            f"| {row.caller} | `{row.operation}` | {per_file:.2f} | {units} | "
            f"{_money(cost_10k)} | {arithmetic} |"
        )
        scope = "uploader" if row.caller == UPLOADER else "conveyor"
        totals[f"{scope}_requests"] += per_file
        totals[f"{scope}_wru"] += row.wru / files
        totals[f"{scope}_rru"] += row.rru / files
        totals[f"{scope}_cost"] += cost_10k
        totals[f"{scope}_{row.operation.split('.')[0]}"] += per_file
    by_service: Counter[str] = Counter()
    for row in summary["rows"]:
        if row.caller != UPLOADER:
            by_service[row.caller] += row.requests / files
    lines += [
        f"| **Conveyor, total** | | **{totals['conveyor_requests']:.2f}** | "
        f"**{totals['conveyor_wru']:.2f}** | **{totals['conveyor_rru']:.2f}** | "
        f"**{_money(totals['conveyor_cost'])}** | |",
        "",
        "by service (requests / file): "
        + ", ".join(f"{c} {v:.2f}" for c, v in by_service.most_common()),
        "by AWS service (requests / file): "
        + ", ".join(
            f"{s} {totals[f'conveyor_{s}']:.2f}"
            for s in ("sqs", "sns", "dynamodb", "s3", "secretsmanager", "sesv2")
            if totals[f"conveyor_{s}"]
        ),
        "empty long polls (not per file): "
        + ", ".join(
            f"{c} {n} ({n / summary['seconds']:.2f}/s)"
            for c, n in sorted(summary["idle_receives"].items())
        ),
        "largest item at the end (bytes): "
        + ", ".join(f"{t} {b}" for t, b in summary["largest_item_bytes"].items()),
    ]
    return "\n".join(lines)


# -- the command -----------------------------------------------------------------------


def parse_options(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.requests", description=__doc__)
    parser.add_argument("--files", type=int, default=500, help="files per leg (500)")
    parser.add_argument("--kib", type=int, default=64, help="size of each file (64)")
    parser.add_argument("--s3", action="store_true", help="also a leg to transfer-s3")
    parser.add_argument("--concurrency", type=int, default=16, help="CONVEYOR_CONCURRENCY (16)")
    parser.add_argument("--sessions", type=int, default=8, help="SFTP max_sessions (8)")
    parser.add_argument("--output", type=Path, help="also write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the state directory")
    return parser.parse_args(argv)


def _as_json(summary: dict[str, Any]) -> dict[str, Any]:
    files = summary["files"]
    return {
        **summary,
        "rows": [
            {
                "service": r.caller,
                "operation": r.operation,
                "requests_per_file": round(r.requests / files, 3),
                "wru_per_file": round(r.wru / files, 3),
                "rru_per_file": round(r.rru / files, 3),
                "usd_per_10000_files": round(r.cost()[0] / files * 10_000, 6),
            }
            for r in summary["rows"]
        ],
    }


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_options(argv)
    state = Path(tempfile.mkdtemp(prefix="conveyor-bench-requests-"))
    say(f"state directory: {state}")
    log = RequestLog(state / "moto-requests.jsonl")
    os.environ["CONVEYOR_MOTO_REQUEST_LOG"] = str(log.path)
    load_at_start = os.getloadavg()
    legs = [Leg("sftp", "R1000", "conveyor_transfer_sftp")]
    if options.s3:
        legs.append(Leg("s3", "R2000", "conveyor_transfer_s3"))
    results: dict[str, dict[str, Any]] = {}
    services: list[Service] = []
    try:
        with running_stand_ins(state, gcs=False) as stand_ins:
            batching = {
                "CONVEYOR_BATCH_WINDOW_SECONDS": "0.5",
                "CONVEYOR_BATCH_MAX_WAIT_SECONDS": "5",
            }
            pipeline = Pipeline(stand_ins, state, batching)
            try:
                destination = pipeline.sftp_destination(
                    "conveyor-requests", max_sessions=options.sessions
                )
                pipeline.add_route("R1000", destination)
                if options.s3:
                    pipeline.s3.create_bucket(Bucket=f"{pipeline.stack}-dest")
                    s3_destination = {"type": "s3", "bucket": f"{pipeline.stack}-dest"}
                    pipeline.add_route("R2000", s3_destination)
                pipeline.start_scanner()
                services.append(pipeline.start("conveyor_notifier", "notifier"))
                workers = {}
                for leg in legs:
                    workers[leg.name] = pipeline.start(
                        leg.service, leg.name, CONVEYOR_CONCURRENCY=str(options.concurrency)
                    )
                    services.append(workers[leg.name])
                bodies = [os.urandom(options.kib * 1024) for _ in range(options.files)]
                for leg in legs:
                    say(f"{leg.name}: {options.files} x {options.kib} KiB through the pipeline")
                    results[leg.name] = run_leg(pipeline, workers[leg.name], log, leg, bodies)
                    say(markdown(leg.name, results[leg.name]))
            finally:
                for service in reversed(services):
                    service.stop()
                pipeline.stop()
    finally:
        if options.keep:
            say(f"kept {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)
    load = {
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "cores": os.cpu_count(),
    }
    print("\n\n".join(markdown(name, summary) for name, summary in results.items()))
    print(f"\nmachine: {load}")
    if options.output is not None:
        report = {
            "command": "uv run python -m bench.requests " + " ".join(sys.argv[1:]),
            "machine": load,
            "legs": {name: _as_json(summary) for name, summary in results.items()},
        }
        options.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
