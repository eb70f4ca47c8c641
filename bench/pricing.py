"""What AWS requests cost: counting moto's request log by Conveyor service and AWS
operation, DynamoDB capacity units by DynamoDB's rules, list prices, and the
tables (one run, or a run before a change against one after it)."""

from __future__ import annotations

import base64
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


# -- counting and pricing -------------------------------------------------------------


def idle_receive(record: dict[str, Any]) -> bool:
    return bool(record["operation"] == "sqs.ReceiveMessage" and record.get("returned", 0) == 0)


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


#: What each priced quantity is called in the tables, its unit price and its basis.
PRICES: dict[str, tuple[float, str]] = {
    "DynamoDB writes": (DYNAMODB_PER_WRU, "WRU x $0.625 / 10^6"),
    "DynamoDB reads": (DYNAMODB_PER_RRU, "RRU x $0.125 / 10^6"),
    "SQS": (SQS_PER_REQUEST, "requests x $0.40 / 10^6"),
    "SNS": (SNS_PER_REQUEST, "publishes x $0.50 / 10^6"),
    "S3 PUT/COPY/LIST": (S3_PER_WRITE_CLASS, "requests x $0.005 / 10^3"),
    "S3 GET/HEAD": (S3_PER_READ_CLASS, "requests x $0.0004 / 10^3"),
    "S3 DELETE": (0.0, "free"),
    "Secrets Manager": (SECRETS_PER_REQUEST, "requests x $0.05 / 10^4"),
}


def price_class(operation: str) -> str | None:
    """Which of ``PRICES`` an operation (``s3.HeadObject``, ``dynamodb.PutItem files``)
    is billed under; ``None`` for what is not priced per request."""
    service, name = operation.split(" ", 1)[0].split(".", 1)
    if service == "s3":
        if name in S3_FREE:
            return "S3 DELETE"
        return "S3 PUT/COPY/LIST" if name in S3_WRITE_CLASS else "S3 GET/HEAD"
    return {"sqs": "SQS", "sns": "SNS", "secretsmanager": "Secrets Manager"}.get(service)


@dataclass
class _Count:
    requests: int = 0
    wru: float = 0.0
    rru: float = 0.0


def summarise(
    records: Iterable[dict[str, Any]], files: int, seconds: float, sizes: dict[str, list[int]]
) -> dict[str, Any]:
    """A leg's requests per file, by (Conveyor service, operation), as JSON."""
    counts: dict[tuple[str, str], _Count] = defaultdict(_Count)
    idle: Counter[str] = Counter()
    for record in records:
        caller = record["caller"] or UPLOADER
        if idle_receive(record):
            idle[caller] += 1
            continue
        operation = record["operation"]
        if operation.startswith("dynamodb.") and record.get("tables"):
            tables = sorted({t.rsplit("-", 1)[1] for t in record["tables"]})
            operation += f" {'+'.join(tables)}"
        count = counts[(caller, operation)]
        count.requests += 1
        if record["operation"].startswith("dynamodb."):
            wru, rru = dynamodb_units(record, sizes)
            count.wru += wru
            count.rru += rru
    rows = [
        {
            "service": caller,
            "operation": operation,
            "requests_per_file": round(c.requests / files, 3),
            "wru_per_file": round(c.wru / files, 3),
            "rru_per_file": round(c.rru / files, 3),
        }
        for (caller, operation), c in sorted(
            counts.items(), key=lambda i: (i[0][0] == UPLOADER, i[0][0], -i[1].requests)
        )
    ]
    for row in rows:
        row["usd_per_10000_files"] = round(row_cost(row) * 10_000, 6)
    return {
        "files": files,
        "seconds": round(seconds, 1),
        "rows": rows,
        "totals": totals(rows),
        "idle_receives": dict(idle),
        "largest_item_bytes": {t.rsplit("-", 1)[1]: max(s, default=0) for t, s in sizes.items()},
    }


def row_cost(row: Mapping[str, Any]) -> float:
    """USD per file for one row."""
    if row["operation"].startswith("dynamodb."):
        return float(
            row["wru_per_file"] * DYNAMODB_PER_WRU + row["rru_per_file"] * DYNAMODB_PER_RRU
        )
    priced = price_class(row["operation"])
    return 0.0 if priced is None else float(row["requests_per_file"] * PRICES[priced][0])


def by_aws_service(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Conveyor's priced quantities per file: WRU, RRU, or requests."""
    found: dict[str, float] = defaultdict(float)
    for row in rows:
        if row["service"] == UPLOADER:
            continue
        if row["operation"].startswith("dynamodb."):
            found["DynamoDB writes"] += row["wru_per_file"]
            found["DynamoDB reads"] += row["rru_per_file"]
        elif (priced := price_class(row["operation"])) is not None:
            found[priced] += row["requests_per_file"]
    return {name: round(found[name], 3) for name in PRICES if found.get(name)}


def totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Conveyor's requests, capacity units and cost per file (the uploader's apart)."""
    ours = [r for r in rows if r["service"] != UPLOADER]
    by_service: Counter[str] = Counter()
    for row in ours:
        by_service[row["service"]] += row["requests_per_file"]
    return {
        "requests_per_file": round(sum(r["requests_per_file"] for r in ours), 2),
        "wru_per_file": round(sum(r["wru_per_file"] for r in ours), 2),
        "rru_per_file": round(sum(r["rru_per_file"] for r in ours), 2),
        "usd_per_10000_files": round(sum(row_cost(r) for r in ours) * 10_000, 4),
        "by_service": {name: round(n, 2) for name, n in by_service.most_common()},
        "by_aws_service": by_aws_service(ours),
        "uploader_requests_per_file": round(
            sum(r["requests_per_file"] for r in rows if r["service"] == UPLOADER), 2
        ),
    }


def _money(value: float) -> str:
    return f"${value:.4f}"


def _arithmetic(row: Mapping[str, Any]) -> str:
    if row["operation"].startswith("dynamodb."):
        return (
            f"({row['wru_per_file']:.2f} WRU x $0.625 + {row['rru_per_file']:.2f} RRU x $0.125)"
            " / 10^6 x 10,000"
        )
    priced = price_class(row["operation"])
    basis = "not priced" if priced is None else PRICES[priced][1]
    return f"{row['requests_per_file']:.2f} x 10,000 x {basis.split(' x ', 1)[-1]}"


def markdown(name: str, leg: Mapping[str, Any]) -> str:
    """One leg's table: requests, capacity units and cost per file and per 10,000 files."""
    lines = [
        f"{name}: {leg['files']} files, {leg['seconds']} s",
        "",
        "| service | operation | requests / file | WRU / file | RRU / file "
        "| per 10,000 files | arithmetic |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in leg["rows"]:
        dynamodb = row["operation"].startswith("dynamodb.")
        units = f"{row['wru_per_file']:.2f} | {row['rru_per_file']:.2f}" if dynamodb else "- | -"
        lines.append(
            f"| {row['service']} | `{row['operation']}` | {row['requests_per_file']:.2f} | "
            f"{units} | {_money(row_cost(row) * 10_000)} | {_arithmetic(row)} |"
        )
    total = totals(leg["rows"])
    lines += [
        f"| **Conveyor, total** | | **{total['requests_per_file']:.2f}** | "
        f"**{total['wru_per_file']:.2f}** | **{total['rru_per_file']:.2f}** | "
        f"**{_money(total['usd_per_10000_files'])}** | |",
        "",
        priced_markdown({"": leg["rows"]}),
        "",
        "by service (requests / file): "
        + ", ".join(f"{c} {v:.2f}" for c, v in total["by_service"].items()),
        "empty long polls (not per file): "
        + ", ".join(
            f"{c} {n} ({n / max(leg['seconds'], 1e-9):.2f}/s)"
            for c, n in sorted(leg["idle_receives"].items())
        ),
        "largest item at the end (bytes): "
        + ", ".join(f"{t} {b}" for t, b in leg["largest_item_bytes"].items()),
    ]
    return "\n".join(lines)


def priced_markdown(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """Cost per 10,000 files by AWS service, arithmetic shown, for one or more runs
    (``runs``: column name -> rows)."""
    quantities = {name: by_aws_service(rows) for name, rows in runs.items()}
    head = " | ".join(f"{name} per file | {name} per 10,000 files".strip() for name in runs)
    lines = [f"| AWS service | {head} |", "|---|" + "---:|---|" * len(runs)]
    for label, (price, basis) in PRICES.items():
        if not any(label in q for q in quantities.values()):
            continue
        cells = []
        for found in quantities.values():
            amount = found.get(label, 0.0)
            cost = amount * 10_000 * price
            cells.append(
                f"{amount:.2f} | {amount:.2f} x 10,000 x {basis.split(' x ', 1)[-1]}"
                f" = {_money(cost)}"
            )
        lines.append(f"| {label} ({basis.split(' x ', 1)[0]}) | " + " | ".join(cells) + " |")
    sums = [
        f"{totals(rows)['requests_per_file']:.2f} requests | "
        f"**{_money(totals(rows)['usd_per_10000_files'])}**"
        for rows in runs.values()
    ]
    lines.append("| **total** | " + " | ".join(sums) + " |")
    return "\n".join(lines)


def compare_markdown(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """Two ``bench.requests --output`` files side by side, leg by leg: each row's
    requests per file before and after, the totals, and the cost by AWS service."""
    parts = []
    for name in [n for n in before["legs"] if n in after["legs"]]:
        old, new = before["legs"][name], after["legs"][name]
        rows = {(r["service"], r["operation"]): [r, None] for r in old["rows"]}
        for row in new["rows"]:
            rows.setdefault((row["service"], row["operation"]), [None, None])[1] = row
        lines = [
            f"{name}: before {old['files']} files in {old['seconds']} s, "
            f"after {new['files']} files in {new['seconds']} s",
            "",
            "| service | operation | before / file | after / file |",
            "|---|---|---:|---:|",
        ]
        for (service, operation), (was, now) in rows.items():
            cells = [f"{r['requests_per_file']:.2f}" if r else "-" for r in (was, now)]
            lines.append(f"| {service} | `{operation}` | {cells[0]} | {cells[1]} |")
        was_total, now_total = totals(old["rows"]), totals(new["rows"])
        for figure, label in (
            ("requests_per_file", "requests"),
            ("wru_per_file", "WRU"),
            ("rru_per_file", "RRU"),
        ):
            lines.append(
                f"| **Conveyor, total** | {label} | **{was_total[figure]:.2f}** | "
                f"**{now_total[figure]:.2f}** |"
            )
        lines += ["", priced_markdown({"before": old["rows"], "after": new["rows"]})]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
