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

``uv run python -m bench.requests --compare BEFORE.json AFTER.json`` prints two
such files side by side (each row before and after, the totals, the cost by
AWS service), e.g. one written in a clone of an older commit and one of today's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.pipeline import Pipeline, Service
from bench.pricing import compare_markdown, idle_receive, item_size, markdown, summarise
from bench.sources import put_objects, small_keys
from bench.standins import running_stand_ins

#: How long only empty long polls must have come before a leg counts as over.
QUIET_SECONDS = 5.0


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Leg:
    name: str
    client_id: str
    service: str


def table_item_sizes(pipeline: Pipeline) -> dict[str, list[int]]:
    """The size of every item in each ledger table, at the end of a leg."""
    return {
        table: [item_size(i) for i in pipeline.scan_table(table)]
        for table in pipeline.ledger_tables()
    }


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
            busy = [r["time"] for r in self.read(start, end) if not idle_receive(r)]
            if not busy or time.time() - max(busy) >= QUIET_SECONDS:
                return end
            time.sleep(0.5)
        raise TimeoutError(f"requests did not stop within {timeout:.0f}s; see {self.path}")

    def summary(
        self, pipeline: Pipeline, start: int, end: int, files: int, seconds: float
    ) -> dict[str, Any]:
        """The requests between two offsets, per file, priced."""
        return summarise(self.read(start, end), files, seconds, table_item_sizes(pipeline))


def run_leg(
    pipeline: Pipeline, service: Service, log: RequestLog, leg: Leg, bodies: Sequence[bytes]
) -> dict[str, Any]:
    pipeline.clear_ledger()
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
    return log.summary(pipeline, start, end, len(keys), seconds)


def parse_options(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.requests",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--files", type=int, default=500, help="files per leg (500)")
    parser.add_argument("--kib", type=int, default=64, help="size of each file (64)")
    parser.add_argument("--s3", action="store_true", help="also a leg to transfer-s3")
    parser.add_argument("--concurrency", type=int, default=16, help="CONVEYOR_CONCURRENCY (16)")
    parser.add_argument("--sessions", type=int, default=8, help="SFTP max_sessions (8)")
    parser.add_argument("--output", type=Path, help="also write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the state directory")
    parser.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("BEFORE", "AFTER"),
        help="measure nothing: print two --output files side by side",
    )
    return parser.parse_args(argv)


def _measure(options: argparse.Namespace, log: RequestLog) -> dict[str, dict[str, Any]]:
    legs = [Leg("sftp", "R1000", "conveyor_transfer_sftp")]
    if options.s3:
        legs.append(Leg("s3", "R2000", "conveyor_transfer_s3"))
    results: dict[str, dict[str, Any]] = {}
    services: list[Service] = []
    with running_stand_ins(log.path.parent, gcs=False, request_log=log.path) as stand_ins:
        batching = {"CONVEYOR_BATCH_WINDOW_SECONDS": "0.5", "CONVEYOR_BATCH_MAX_WAIT_SECONDS": "5"}
        pipeline = Pipeline(stand_ins, log.path.parent, batching)
        try:
            destination = pipeline.sftp_destination(
                "conveyor-requests", max_sessions=options.sessions
            )
            pipeline.add_route("R1000", destination)
            if options.s3:
                pipeline.s3.create_bucket(Bucket=f"{pipeline.stack}-dest")
                pipeline.add_route("R2000", {"type": "s3", "bucket": f"{pipeline.stack}-dest"})
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
    return results


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_options(argv)
    if options.compare is not None:
        before, after = (json.loads(path.read_text()) for path in options.compare)
        print(compare_markdown(before, after))
        return
    state = Path(tempfile.mkdtemp(prefix="conveyor-bench-requests-"))
    say(f"state directory: {state}")
    load_at_start = os.getloadavg()
    started = time.monotonic()
    try:
        results = _measure(options, RequestLog(state / "moto-requests.jsonl"))
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
            "seconds": round(time.monotonic() - started, 1),
            "legs": results,
        }
        options.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
