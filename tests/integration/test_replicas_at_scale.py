"""Any number of replicas of each service, as real processes on one queue (D8,
D10): three scanners form the jobs and send the mails one scanner would; two
workers of each transfer service deliver every file once, with no clash of
temporary names."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from conveyor_cli.localstack import servers
from conveyor_cli.localstack.processes import ManagedProcess
from tests.integration.test_scanner import route
from tests.support import (
    Stack,
    bodies,
    eventually,
    json_lines,
    ledger_items,
    service_process,
    sftp_route,
    subscribe_events,
    write_routes,
)

BURST, DONE_BATCH = "H3201", "H3202"


async def put_many(aws: dict[str, Any], bucket: str, keys: Iterable[str]) -> None:
    limit = asyncio.Semaphore(16)

    async def one(key: str) -> None:
        async with limit:
            await aws["s3"].put_object(Bucket=bucket, Key=key, Body=f"{key}\n".encode())

    await asyncio.gather(*(one(k) for k in keys))


async def delivered(aws: dict[str, Any], stack: Stack, client: str, count: int) -> bool:
    items = await ledger_items(aws["dynamodb"], stack, client)
    return len(items) == count and all(i["status"] == "success" for i in items)


def stop(processes: list[ManagedProcess]) -> None:
    for process in processes:
        process.stop()


def logged(logs: Iterable[Path], event: str) -> list[dict[str, Any]]:
    return [line for log in logs for line in json_lines(log) if line.get("event") == event]


async def test_three_scanners_form_the_jobs_and_send_the_mails_of_one(
    stack: Stack, aws: dict[str, Any], tmp_path: Path, unique: str
) -> None:
    destination = f"dest-{unique}"
    await aws["s3"].create_bucket(Bucket=destination)
    s3_destination = {"type": "s3", "bucket": destination, "prefix": "in/"}
    routes = write_routes(
        tmp_path / "routes.yaml",
        [
            route(stack, BURST, destination=s3_destination, notify=False),
            route(
                stack,
                DONE_BATCH,
                destination=s3_destination,
                notify=False,
                trigger_on_done_file=True,
            ),
        ],
    )
    events = await subscribe_events(aws, stack)
    # A quiet period long enough that one scanner makes one job of the burst
    # even on a loaded moto: three must make exactly the same.
    env = stack.service_env(
        routes, CONVEYOR_BATCH_WINDOW_SECONDS="10", CONVEYOR_BATCH_MAX_WAIT_SECONDS="300"
    )
    scanner_logs = [tmp_path / f"scanner-{i}.log" for i in range(3)]
    processes = [service_process("conveyor_scanner", log, env) for log in scanner_logs]
    processes.append(service_process("conveyor_transfer_s3", tmp_path / "transfer.log", env))
    try:
        await put_many(
            aws, stack.pickup_bucket, (f"{BURST}/burst/f{i:03d}.csv" for i in range(300))
        )
        await put_many(
            aws, stack.pickup_bucket, (f"{DONE_BATCH}/part-{i:03d}.csv" for i in range(200))
        )
        await aws["s3"].put_object(
            Bucket=stack.pickup_bucket, Key=f"{DONE_BATCH}/{DONE_BATCH}.done", Body=b""
        )
        for client, count in ((BURST, 300), (DONE_BATCH, 200)):
            await eventually(
                lambda c=client, n=count: delivered(aws, stack, c, n),  # type: ignore[misc]
                timeout=240,
                interval=1.0,
                what=f"{count} files of {client} delivered",
            )
        seen: list[dict[str, Any]] = []

        async def both_jobs_finished() -> bool:
            seen.extend(await bodies(aws["sqs"], events, settle=0.5))
            return sum(e["kind"] == "job.finished" for e in seen) >= 2

        await eventually(both_jobs_finished, timeout=120, what="both jobs finished")
        seen.extend(await bodies(aws["sqs"], events, settle=2.0))
    finally:
        stop(processes)
    started = sorted((e["client_id"], e["files"]) for e in seen if e["kind"] == "job.started")
    finished = sorted(
        (e["client_id"], e["succeeded"], e["failed"]) for e in seen if e["kind"] == "job.finished"
    )
    assert started == [(BURST, 300), (DONE_BATCH, 200)]
    assert finished == [(BURST, 300, 0), (DONE_BATCH, 200, 0)]
    for client in (BURST, DONE_BATCH):
        items = await ledger_items(aws["dynamodb"], stack, client)
        assert len({i["jobId"] for i in items}) == 1, f"{client}'s files are in one job"
        assert {i["sendAttempts"] for i in items} == {1}
    # Every scanner took part, and each file was recorded by exactly one.
    recorded = Counter(line["key"] for line in logged(scanner_logs, "file.recorded"))
    assert len(recorded) == 500
    assert set(recorded.values()) == {1}
    assert all(json_lines(log) for log in scanner_logs)


async def test_two_workers_of_each_transfer_service_deliver_every_file_once(
    stack: Stack, aws: dict[str, Any], sshd: servers.Sshd, tmp_path: Path, unique: str
) -> None:
    to_sftp, to_s3 = "H3203", "H3204"
    directory = f"replicas-{unique}"
    (sshd.root / directory).mkdir()
    destination = f"dest-{unique}"
    await aws["s3"].create_bucket(Bucket=destination)
    routes = await sftp_route(
        stack, aws, sshd, tmp_path / "routes.yaml", to_sftp, directory, sshd.port, notify=False
    )
    file = yaml.safe_load(routes.read_text())
    file["routes"].append(
        route(
            stack,
            to_s3,
            destination={"type": "s3", "bucket": destination, "prefix": "in/"},
            notify=False,
        )
    )
    write_routes(
        routes, file["routes"], **{k: v for k, v in file.items() if k not in {"routes", "version"}}
    )
    env = stack.service_env(routes, CONVEYOR_CONCURRENCY="8")
    worker_logs = {
        kind: [tmp_path / f"{kind}-{i}.log" for i in range(2)] for kind in ("sftp", "s3")
    }
    processes = [
        service_process(f"conveyor_transfer_{kind}", log, env)
        for kind, logs in worker_logs.items()
        for log in logs
    ]
    processes.append(service_process("conveyor_scanner", tmp_path / "scanner.log", env))
    try:
        await asyncio.gather(
            put_many(aws, stack.pickup_bucket, (f"{to_sftp}/f{i:03d}.csv" for i in range(200))),
            put_many(aws, stack.pickup_bucket, (f"{to_s3}/f{i:03d}.csv" for i in range(200))),
        )
        for client in (to_sftp, to_s3):
            await eventually(
                lambda c=client: delivered(aws, stack, c, 200),  # type: ignore[misc]
                timeout=300,
                interval=1.0,
                what=f"200 files of {client} delivered",
            )
    finally:
        stop(processes)
    landed = sorted(p.name for p in (sshd.root / directory).iterdir())
    assert landed == [f"f{i:03d}.csv" for i in range(200)], "no temporary name left behind"
    for name in landed[:5] + landed[-5:]:
        assert (sshd.root / directory / name).read_text() == f"{to_sftp}/{name}\n"
    listed = await aws["s3"].list_objects_v2(Bucket=destination, Prefix="in/")
    assert len(listed["Contents"]) == 200
    for kind, logs in worker_logs.items():
        deliveries = logged(logs, "transfer.delivered")
        files = Counter(line["file"] for line in deliveries)
        assert len(files) == 200, kind
        assert set(files.values()) == {1}, f"{kind}: a file delivered twice"
        assert all(logged([log], "transfer.delivered") for log in logs), f"{kind}: one worker idle"
    for client in (to_sftp, to_s3):
        items = await ledger_items(aws["dynamodb"], stack, client)
        assert {i["sendAttempts"] for i in items} == {1}
