"""Crash safety and three strikes (D7, A3), with the transfer
service as a real process:

* ``kill -9`` of a worker in the middle of a transfer: the message comes
  back after its visibility timeout, the file is delivered once, the
  destination never shows a partial file under its final name, the ledger
  ends ``success`` once and ``job.finished`` is published once.
* a destination that keeps failing: three receives, then the dead-letter
  queue, where the file becomes ``fail`` with one ``file.failed`` event.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from conveyor_cli.localstack import servers
from conveyor_cli.localstack.processes import free_port
from conveyor_scanner.app import run as run_scanner
from conveyor_scanner.settings import ScannerSettings
from conveyor_shared.delivery.service import TransferSettings
from conveyor_transfer_sftp.app import run as run_transfer_sftp
from tests.support import (
    InProcessServices,
    Stack,
    TcpProxy,
    bodies,
    eventually,
    json_lines,
    ledger_items,
    service_process,
    sftp_route,
    subscribe_events,
    watch_final_name,
)

MiB = 1024 * 1024
CLIENT = "H3001"


async def test_kill_9_mid_transfer_delivers_once_and_never_shows_a_partial_file(
    stack: Stack,
    aws: dict[str, Any],
    sshd: servers.Sshd,
    tmp_path: Path,
    unique: str,
    services: InProcessServices,
) -> None:
    directory = f"crash-{unique}"
    (sshd.root / directory).mkdir()
    final = sshd.root / directory / "claims_2026-11.bin"
    data = os.urandom(48 * MiB)
    events = await subscribe_events(aws, stack)
    async with TcpProxy(sshd.port, bytes_per_second=6 * MiB) as slow_link:
        routes = await sftp_route(
            stack, aws, sshd, tmp_path / "routes.yaml", CLIENT, directory, slow_link.port
        )
        services.start(
            run_scanner,
            ScannerSettings(
                stack=stack.name,
                routes_uri=str(routes),
                environment="test",
                receive_wait_seconds=1,
                batch_window_seconds=0.2,
            ),
        )
        env = stack.service_env(routes, CONVEYOR_VISIBILITY_TIMEOUT="6", CONVEYOR_LEASE_SECONDS="6")
        first = service_process("conveyor_transfer_sftp", tmp_path / "first.log", env)
        second = None
        try:
            async with watch_final_name(final, len(data)) as wrong_sizes:
                await aws["s3"].put_object(
                    Bucket=stack.pickup_bucket, Key=f"{CLIENT}/claims_2026-11.bin", Body=data
                )

                async def in_flight() -> bool:
                    items = await ledger_items(aws["dynamodb"], stack, CLIENT)
                    return bool(items) and items[0].get("bytesDone", 0) > 0

                await eventually(in_flight, timeout=60, what="progress of the transfer")
                first.kill()  # SIGKILL: no clean-up, no goodbye
                assert not final.exists(), "nothing under the final name after the crash"
                second = service_process("conveyor_transfer_sftp", tmp_path / "second.log", env)

                async def settled() -> dict[str, Any] | None:
                    items = await ledger_items(aws["dynamodb"], stack, CLIENT)
                    return items[0] if items and items[0]["status"] != "processing" else None

                entry = await eventually(settled, timeout=120, what="the redelivered transfer")
        finally:
            first.stop()
            if second is not None:
                second.stop()
    assert wrong_sizes == [], "a partial file was visible under its final name"
    assert entry["status"] == "success"
    assert entry["sendAttempts"] == 2
    assert hashlib.sha256(final.read_bytes()).digest() == hashlib.sha256(data).digest()
    # The killed worker's temporary file stays until an upload there sweeps it an hour on.
    left = sorted(p.name for p in (sshd.root / directory).iterdir())
    assert [n for n in left if not n.startswith(".conveyor-")] == ["claims_2026-11.bin"]
    assert len(left) <= 2
    delivered = [
        e
        for log in ("first.log", "second.log")
        for e in json_lines(tmp_path / log)
        if e.get("event") == "transfer.delivered"
    ]
    assert len(delivered) == 1
    published = await bodies(aws["sqs"], events, settle=2.0)
    finished = [e for e in published if e["kind"] == "job.finished"]
    assert [(e["job_id"], e["succeeded"], e["failed"]) for e in finished] == [
        (entry["jobId"], 1, 0)
    ]


async def test_three_failed_attempts_end_in_the_dlq_with_one_file_failed(
    stack: Stack,
    aws: dict[str, Any],
    sshd: servers.Sshd,
    tmp_path: Path,
    unique: str,
    services: InProcessServices,
) -> None:
    # Nothing listens on this port: every attempt fails with a connection error.
    routes = await sftp_route(
        stack,
        aws,
        sshd,
        tmp_path / "routes.yaml",
        CLIENT,
        f"dlq-{unique}",
        free_port(),
        retry_delays_seconds=[0, 0],
    )
    events = await subscribe_events(aws, stack)
    common: dict[str, Any] = {
        "stack": stack.name,
        "routes_uri": str(routes),
        "environment": "test",
        "receive_wait_seconds": 1,
    }
    services.start(run_scanner, ScannerSettings(**common, batch_window_seconds=0.2))
    services.start(run_transfer_sftp, TransferSettings(**common, retry_delays=[0, 0, 0]))
    await aws["s3"].put_object(
        Bucket=stack.pickup_bucket, Key=f"{CLIENT}/doomed.csv", Body=b"never arrives"
    )

    async def failed() -> dict[str, Any] | None:
        items = await ledger_items(aws["dynamodb"], stack, CLIENT)
        return items[0] if items and items[0]["status"] == "fail" else None

    entry = await eventually(failed, timeout=90, what="the file to fail via the DLQ")
    assert entry["sendAttempts"] == 3
    assert entry["active"] is False
    assert "failed 3 attempts" in entry["lastError"]
    assert entry["errorKind"] == "transient"
    published = await bodies(aws["sqs"], events, settle=2.0)
    failures = [e for e in published if e["kind"] == "file.failed"]
    assert [(e["file_name"], e["attempts"]) for e in failures] == [("doomed.csv", 3)]
    finished = [e for e in published if e["kind"] == "job.finished"]
    assert [(e["succeeded"], e["failed"]) for e in finished] == [(0, 1)]
