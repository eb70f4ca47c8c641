"""The walking skeleton: a file put into a pick-up reaches its S3 destination
through the real path (S3 event notification -> SQS -> scanner -> transfer
queue -> transfer-s3 -> DynamoDB), with the services as real processes and
their JSON logs telling the file's journey."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support import Stack, eventually, json_lines, service_process, write_routes


async def test_file_reaches_s3_destination_with_ledger_success(
    stack: Stack, aws: dict[str, Any], tmp_path: Path, unique: str
) -> None:
    s3, dynamodb = aws["s3"], aws["dynamodb"]
    destination = f"dest-{unique}"
    await s3.create_bucket(Bucket=destination)
    routes = write_routes(
        tmp_path / "routes.yaml",
        [
            {
                "name": "Skeleton client",
                "client_id": "H1001",
                "contacts": ["ops@example.com"],
                "pickup": f"s3://{stack.pickup_bucket}/H1001/",
                "destination": {"type": "s3", "bucket": destination, "prefix": "inbound/"},
            }
        ],
    )
    env = stack.service_env(routes, CONVEYOR_BATCH_WINDOW_SECONDS="0.2")
    procs = [
        service_process(m, tmp_path / f"{m}.log", env)
        for m in ("conveyor_scanner", "conveyor_transfer_s3")
    ]
    try:
        body = b"member_id,plan\n1,H1001-001\n" * 1000
        await s3.put_object(Bucket=stack.pickup_bucket, Key="H1001/report 2026-11.csv", Body=body)

        async def delivered() -> bytes | None:
            listed = await s3.list_objects_v2(Bucket=destination, Prefix="inbound/")
            if not listed.get("Contents"):
                return None
            obj = await s3.get_object(Bucket=destination, Key="inbound/report 2026-11.csv")
            async with obj["Body"] as stream:
                return bytes(await stream.read())

        assert await eventually(delivered, timeout=60, what="delivery") == body

        async def ledger_success() -> dict[str, Any] | None:
            items = (
                await dynamodb.query(
                    TableName=f"{stack.name}-files",
                    KeyConditionExpression="clientId = :c",
                    ExpressionAttributeValues={":c": {"S": "H1001"}},
                )
            )["Items"]
            return items[0] if items and items[0]["status"]["S"] == "success" else None

        entry = await eventually(ledger_success, timeout=30, what="ledger success")
        assert entry["fileName"]["S"] == "report 2026-11.csv"
        assert entry["filePath"]["S"] == f"s3://{stack.pickup_bucket}/H1001/report 2026-11.csv"
        assert entry["active"]["BOOL"] is False
        assert entry["sendAttempts"]["N"] == "1"
        job_id = entry["jobId"]["S"]

        async def job_finished() -> dict[str, Any] | None:
            item = (
                await dynamodb.get_item(
                    TableName=f"{stack.name}-jobs", Key={"jobId": {"S": job_id}}
                )
            )["Item"]
            return item if item["status"]["S"] == "finished" else None

        # The file went on arrival; its job closes once its batch window has passed.
        job = await eventually(job_finished, timeout=30, what="the job to finish")
        assert job["succeeded"]["N"] == "1"
        # Default after-delivery action: the delivered file leaves the pick-up.
        remaining = await s3.list_objects_v2(Bucket=stack.pickup_bucket, Prefix="H1001/")
        assert not remaining.get("Contents")
    finally:
        for proc in procs:
            proc.stop()

    scanner_log = json_lines(tmp_path / "conveyor_scanner.log")
    transfer_log = json_lines(tmp_path / "conveyor_transfer_s3.log")
    started = [e for e in scanner_log if e.get("event") == "job.started"]
    assert started[0]["client_id"] == "H1001"
    assert started[0]["job_id"] == job_id
    # Listed as it was when the job's batch closed: on its way, or delivered already.
    assert [f["file"] for f in started[0]["files"]] == ["report 2026-11.csv"]
    assert started[0]["files"][0]["status"] in {"processing", "success"}
    delivered_events = [e for e in transfer_log if e.get("event") == "transfer.delivered"]
    assert delivered_events[0]["job_id"] == job_id
    assert delivered_events[0]["client_id"] == "H1001"
    assert delivered_events[0]["to"] == f"s3://{destination}/inbound/report 2026-11.csv"
    # Whoever completed the job logs its finish: the worker's count, or the
    # scanner starting a job whose files were all delivered already.
    finished = [e for e in scanner_log + transfer_log if e.get("event") == "job.finished"]
    assert finished[0]["files"] == [
        {"file": "report 2026-11.csv", "status": "success", "attempts": 1}
    ]
