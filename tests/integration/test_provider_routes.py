"""Reports to partners (S7): a route addressed by a provider's id, not a
client's H number, delivers to the partner's SFTP server through the scanner
and transfer-sftp unchanged, recorded and reported under that id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conveyor_cli.localstack import servers
from conveyor_shared.delivery.service import TransferSettings
from conveyor_transfer_sftp.app import run as run_transfer_sftp
from tests.support import (
    InProcessServices,
    Stack,
    eventually,
    ledger_items,
    sftp_route,
    start_scanner,
    subscribe_events,
)

PROVIDER = "bcbs-tx"


async def test_a_report_reaches_the_providers_sftp_server_under_its_id(
    stack: Stack,
    aws: dict[str, Any],
    services: InProcessServices,
    sshd: servers.Sshd,
    tmp_path: Path,
    unique: str,
) -> None:
    folder = sshd.root / f"reports-{unique}"
    folder.mkdir()
    routes = await sftp_route(
        stack, aws, sshd, tmp_path / "routes.yaml", PROVIDER, folder.name, sshd.port
    )
    events_queue = await subscribe_events(aws, stack)
    start_scanner(services, stack, routes)
    services.start(
        run_transfer_sftp,
        TransferSettings(
            stack=stack.name, routes_uri=str(routes), environment="test", receive_wait_seconds=1
        ),
    )
    report = b"member_id,measure,rate\nM1,HbA1c,0.82\n"
    await aws["s3"].put_object(
        Bucket=stack.pickup_bucket, Key=f"{PROVIDER}/quality_2026-11.csv", Body=report
    )

    async def delivered() -> list[dict[str, Any]] | None:
        items = await ledger_items(aws["dynamodb"], stack, PROVIDER)
        return items if items and items[0]["status"] == "success" else None

    (entry,) = await eventually(delivered, timeout=60, what="the report to be delivered")
    assert entry["fileName"] == "quality_2026-11.csv"
    assert entry["sendAttempts"] == 1
    assert (folder / "quality_2026-11.csv").read_bytes() == report

    seen: list[dict[str, Any]] = []

    async def finished() -> bool:
        response = await aws["sqs"].receive_message(
            QueueUrl=events_queue, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        seen.extend(json.loads(m["Body"]) for m in response.get("Messages", []))
        return any(e["kind"] == "job.finished" for e in seen)

    await eventually(finished, timeout=60, what="job.finished for the provider")
    job = next(e for e in seen if e["kind"] == "job.finished")
    assert job["client_id"] == PROVIDER
    assert job["succeeded"] == 1
