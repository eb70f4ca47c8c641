"""Three strikes (D7) hold however many receives a file's messages had, against
the real servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conveyor_cli.localstack import servers
from conveyor_cli.localstack.processes import free_port
from conveyor_shared.delivery.service import TransferSettings
from conveyor_shared.ledger.dynamo import to_item
from conveyor_transfer_sftp.app import run as run_transfer_sftp
from tests.support import (
    InProcessServices,
    Stack,
    eventually,
    ledger_items,
    sftp_route,
    start_scanner,
)

CLIENT = "H3201"


async def test_a_file_sent_back_from_the_dead_letter_queue_gets_no_fourth_attempt(
    stack: Stack,
    aws: dict[str, Any],
    sshd: servers.Sshd,
    tmp_path: Path,
    unique: str,
    services: InProcessServices,
) -> None:
    """A file whose first message reached the DLQ after two attempts (one
    receive made none: a stop, or a wait for another lease) is sent back as a
    new message with a fresh receive count. Its third attempt is the last: the
    file must fail with three attempts, not be tried again at once."""
    directory = f"strikes-{unique}"
    (sshd.root / directory).mkdir()
    routes = await sftp_route(
        stack,
        aws,
        sshd,
        tmp_path / "routes.yaml",
        CLIENT,
        directory,
        free_port(),  # nothing listens: every attempt fails
        retry_delays_seconds=[1, 1],
    )
    start_scanner(services, stack, routes)
    await aws["s3"].put_object(
        Bucket=stack.pickup_bucket, Key=f"{CLIENT}/plan.csv", Body=b"member,plan\n1,A\n"
    )

    async def recorded() -> dict[str, Any] | None:
        items = await ledger_items(aws["dynamodb"], stack, CLIENT)
        return items[0] if items else None

    # Recorded means dispatched: the scanner sends the message right after the put.
    entry = await eventually(recorded, timeout=30, what="the file to be recorded")
    # The state the dead-letter consumer requeues in: two attempts used.
    await aws["dynamodb"].update_item(
        TableName=f"{stack.name}-files",
        Key=to_item({"clientId": CLIENT, "contentId": entry["contentId"]}),
        UpdateExpression="ADD sendAttempts :two",
        ExpressionAttributeValues=to_item({":two": 2}),
    )
    services.start(
        run_transfer_sftp,
        TransferSettings(
            stack=stack.name, routes_uri=str(routes), environment="test", receive_wait_seconds=1
        ),
    )

    async def failed() -> dict[str, Any] | None:
        items = await ledger_items(aws["dynamodb"], stack, CLIENT)
        return items[0] if items and items[0]["status"] == "fail" else None

    settled = await eventually(failed, timeout=60, what="the file to fail")
    assert settled["sendAttempts"] == 3, f"{settled['sendAttempts']} attempts, not three"
    assert [a["outcome"] for a in settled["attempts"]] == ["failed", "fail"]
