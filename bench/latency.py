"""Arrival to delivery: small files put one by one, each timed through the pipeline.

Each file's time is cut at the marks the pipeline leaves, whichever it has:

* ``arrival``: the harness's ``PutObject`` returned (the file is in the pick-up);
* ``scanner``: the scanner logged ``pickup.arrived`` for its key (S3 event and
  scanner queue behind it);
* ``dispatched``: the entry's ``dispatchedAt`` in the ledger, where the scanner
  still writes one per file (the moment ``transfer.requested`` was sent);
* ``worker``: the transfer service logged ``transfer.started`` for it (claimed);
* ``delivered``: the entry's ``deliveredAt`` (settled ``success``).

The time between ``scanner`` and the next mark every file has is the file's
wait in the scanner: its batch window and its recording where a window delays
dispatch, only the recording where files are dispatched on arrival. Its share
of the whole is ``batch_window_share``; nothing here assumes a window exists.
Where the ledger keeps no dispatch time, the wait runs to ``worker`` and also
holds the transfer queue and any wait for a free worker slot: an upper bound
(``scanner_wait_ends_at`` says which).
"""

from __future__ import annotations

import itertools
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench.legs import Bench, Figures, client_id, remove_sftp_dir, transfer_service
from bench.pipeline import parse_time, read_events
from bench.sources import small_keys

MARKS = ("arrival", "scanner", "dispatched", "worker", "delivered")
SHARE_MEANING = {
    "dispatched": "the scanner's hold: batch window and recording",
    "worker": "an upper bound: the scanner's hold, the transfer queue and the wait for a "
    "worker slot (no dispatch time in the ledger)",
}


def _put_one_by_one(bench: Bench, keys: Sequence[str], size: int, interval: float) -> list[float]:
    """Each key put ``interval`` apart (a steady cadence, not sleeps that add up);
    the time each ``PutObject`` returned."""
    arrivals = []
    start = time.monotonic()
    for index, key in enumerate(keys):
        time.sleep(max(0.0, start + index * interval - time.monotonic()))
        bench.s3.put_object(Bucket=bench.pipeline.pickup_bucket, Key=key, Body=os.urandom(size))
        arrivals.append(time.time())
    return arrivals


def _first_times(events: Sequence[Mapping[str, Any]], event: str, field: str) -> dict[str, float]:
    """``field`` value -> the time of the first ``event`` that names it."""
    found: dict[str, float] = {}
    for e in events:
        if e.get("event") == event and isinstance(e.get(field), str):
            found.setdefault(e[field], parse_time(e["timestamp"]))
    return found


def _percentile(values: Sequence[float], percent: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def _spread(values: Sequence[float]) -> Figures:
    return {
        "p50": round(_percentile(values, 50), 3),
        "p99": round(_percentile(values, 99), 3),
        "mean": round(statistics.fmean(values), 3),
        "max": round(max(values), 3),
    }


def _phases(marks: Sequence[Mapping[str, float]]) -> Figures:
    """Each phase between consecutive marks that every file has, and its share."""
    present = [m for m in MARKS if all(m in file for file in marks)]
    whole = sum(file["delivered"] - file["arrival"] for file in marks)
    phases: Figures = {}
    for start, end in itertools.pairwise(present):
        spans = [file[end] - file[start] for file in marks]
        phases[f"{start}_to_{end}"] = {**_spread(spans), "share": round(sum(spans) / whole, 3)}
    return phases


def _scanner_wait(marks: Sequence[Mapping[str, float]]) -> tuple[str | None, list[float]]:
    """The scanner's hold on each file: from ``scanner`` to the next mark every file has."""
    if not all("scanner" in file for file in marks):
        return None, []
    after = MARKS[MARKS.index("scanner") + 1 :]
    end = next(m for m in after if all(m in file for file in marks))
    return end, [file[end] - file["scanner"] for file in marks]


def conveyor_latency(bench: Bench, *, files: int, size: int, interval: float) -> Figures:
    """``files`` uploads ``interval`` apart, delivered by transfer-sftp (verified)."""
    pipeline = bench.pipeline
    client = client_id("latency", 0)
    keys = small_keys(f"{client}/", files)
    pipeline.clear_ledger()
    environment = {"CONVEYOR_CONCURRENCY": str(bench.small.concurrency)}
    with transfer_service(bench, "sftp", "latency", **environment) as (service, _watch, _cpu):
        arrivals = _put_one_by_one(bench, keys, size, interval)
        for _ in keys:
            service.wait_for(
                lambda e: e.get("event") == "transfer.delivered", 600, "latency deliveries"
            )
        worker = _first_times(service.events, "transfer.started", "file")
    scanner = _first_times(read_events(pipeline.scanner.log.path), "pickup.arrived", "key")
    entries = {e["sourceKey"]: e for e in pipeline.ledger(client) if e["status"] == "success"}
    if len(entries) != files:
        raise RuntimeError(f"{len(entries)} of {files} files are success in the ledger")
    marks: list[dict[str, float]] = []
    for key, arrival in zip(keys, arrivals, strict=True):
        entry = entries[key]
        file: dict[str, float] = {"arrival": arrival, "delivered": parse_time(entry["deliveredAt"])}
        if key in scanner:
            file["scanner"] = scanner[key]
        if "dispatchedAt" in entry:
            file["dispatched"] = parse_time(entry["dispatchedAt"])
        if key.rsplit("/", 1)[-1] in worker:
            file["worker"] = worker[key.rsplit("/", 1)[-1]]
        marks.append(file)
    remove_sftp_dir(bench, "conveyor-latency")
    latencies = [file["delivered"] - file["arrival"] for file in marks]
    wait_until, waits = _scanner_wait(marks)
    return {
        "files": files,
        "interval_seconds": interval,
        "arrival_to_delivered": _spread(latencies),
        "phases": _phases(marks),
        "scanner_wait_ends_at": wait_until,
        "batch_window_share_is": SHARE_MEANING.get(wait_until or "", "not measured"),
        "scanner_wait": _spread(waits) if waits else None,
        "batch_window_share": round(sum(waits) / sum(latencies), 3) if waits else None,
        "jobs": len({e["jobId"] for e in entries.values()}),
        "upload_seconds": round(arrivals[-1] - arrivals[0], 2),
    }
