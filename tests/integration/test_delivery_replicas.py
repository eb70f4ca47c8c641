"""Transfer workers as real processes racing for the same file, stopping,
and outliving an outage (D7, B2): one delivery, nothing but the right bytes
ever under the final name, no pick-up file lost, every attempt on record."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncssh

from conveyor_cli.localstack import servers
from conveyor_cli.localstack.processes import ManagedProcess, free_port
from conveyor_shared.delivery.service import TransferSettings
from conveyor_shared.ledger.dynamo import parse_iso
from conveyor_transfer_sftp.app import run as run_transfer_sftp
from tests.support import (
    InProcessServices,
    Stack,
    TcpProxy,
    eventually,
    json_lines,
    ledger_items,
    service_process,
    sftp_route,
    start_scanner,
    watch_final_name,
    write_routes,
)

MiB = 1024 * 1024
CLIENT = "H3101"


async def _none_left(left: Callable[[], Awaitable[list[Any]]]) -> bool:
    return await left() == []


async def the_entry(aws: dict[str, Any], stack: Stack) -> dict[str, Any] | None:
    items = await ledger_items(aws["dynamodb"], stack, CLIENT)
    return items[0] if items else None


async def in_flight(aws: dict[str, Any], stack: Stack) -> dict[str, Any] | None:
    """The file's entry once some of its bytes have moved."""
    entry = await the_entry(aws, stack)
    return entry if entry and entry.get("bytesDone", 0) > 0 else None


async def settled(aws: dict[str, Any], stack: Stack) -> dict[str, Any] | None:
    entry = await the_entry(aws, stack)
    return entry if entry and entry["status"] != "processing" else None


def events(logs: list[Path], name: str) -> list[dict[str, Any]]:
    return [e for log in logs if log.exists() for e in json_lines(log) if e.get("event") == name]


async def pickup_versions(aws: dict[str, Any], stack: Stack) -> list[dict[str, Any]]:
    listed = await aws["s3"].list_object_versions(Bucket=stack.pickup_bucket, Prefix=CLIENT)
    return list(listed.get("Versions", [])) + list(listed.get("DeleteMarkers", []))


async def test_a_paused_worker_that_lost_its_lease_stops_and_the_file_lands_once(
    stack: Stack,
    aws: dict[str, Any],
    sshd: servers.Sshd,
    tmp_path: Path,
    unique: str,
    services: InProcessServices,
) -> None:
    """The first worker is frozen mid-transfer past its lease and its message's
    visibility: the same SQS message goes to a second worker, which takes the
    file over. When the first one wakes up it must stop, not finish its copy."""
    directory = f"paused-{unique}"
    (sshd.root / directory).mkdir()
    final = sshd.root / directory / "roster.bin"
    data = os.urandom(24 * MiB)
    async with TcpProxy(sshd.port, bytes_per_second=4 * MiB) as slow_link:
        routes = await sftp_route(
            stack, aws, sshd, tmp_path / "routes.yaml", CLIENT, directory, slow_link.port
        )
        start_scanner(services, stack, routes)
        env = stack.service_env(routes, CONVEYOR_VISIBILITY_TIMEOUT="5", CONVEYOR_LEASE_SECONDS="4")
        logs = [tmp_path / "first.log", tmp_path / "second.log"]
        first = service_process("conveyor_transfer_sftp", logs[0], env)
        second: ManagedProcess | None = None
        try:
            async with watch_final_name(final, len(data)) as wrong_sizes:
                await aws["s3"].put_object(
                    Bucket=stack.pickup_bucket, Key=f"{CLIENT}/roster.bin", Body=data
                )

                moving = await eventually(
                    lambda: in_flight(aws, stack), timeout=60, what="progress"
                )
                paused_owner = moving["leaseOwner"]
                os.kill(first.pid, signal.SIGSTOP)
                second = service_process("conveyor_transfer_sftp", logs[1], env)

                async def taken_over() -> bool:
                    entry = await the_entry(aws, stack)
                    return bool(entry) and entry.get("leaseOwner") not in (None, paused_owner)

                await eventually(taken_over, timeout=60, what="the second worker's claim")
                os.kill(first.pid, signal.SIGCONT)

                async def first_gave_up() -> bool:
                    return bool(
                        events([logs[0]], "transfer.lease_lost")
                        or events([logs[0]], "message.abandoned")
                    )

                await eventually(first_gave_up, timeout=30, what="the first worker to stop")
                entry = await eventually(
                    lambda: settled(aws, stack), timeout=90, what="the delivery"
                )
        finally:
            os.kill(first.pid, signal.SIGCONT)
            first.stop()
            if second is not None:
                second.stop()
    assert wrong_sizes == [], "a partial or mixed file was visible under its final name"
    assert hashlib.sha256(final.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert entry["status"] == "success"
    assert entry["sendAttempts"] == 2
    assert [e["to"] for e in events(logs, "transfer.delivered")] == [entry["deliveredTo"]]
    assert events([logs[0]], "transfer.delivered") == []

    async def only_the_file_left() -> bool:
        return sorted(p.name for p in (sshd.root / directory).iterdir()) == ["roster.bin"]

    await eventually(only_the_file_left, timeout=20, what="the first worker's temp file removed")
    # The delivered version was deleted from the pick-up, exactly once, with no
    # delete marker left over anything.
    assert await pickup_versions(aws, stack) == []


async def test_two_workers_handed_the_same_file_deliver_it_once(
    stack: Stack,
    aws: dict[str, Any],
    sshd: servers.Sshd,
    tmp_path: Path,
    unique: str,
    services: InProcessServices,
) -> None:
    directory = f"twice-{unique}"
    (sshd.root / directory).mkdir()
    final = sshd.root / directory / "claims.bin"
    data = os.urandom(8 * MiB)
    async with TcpProxy(sshd.port, bytes_per_second=4 * MiB) as slow_link:
        routes = await sftp_route(
            stack, aws, sshd, tmp_path / "routes.yaml", CLIENT, directory, slow_link.port
        )
        start_scanner(services, stack, routes)
        queue = (await aws["sqs"].get_queue_url(QueueName=f"{stack.name}-transfer-sftp"))[
            "QueueUrl"
        ]
        await aws["s3"].put_object(
            Bucket=stack.pickup_bucket, Key=f"{CLIENT}/claims.bin", Body=data
        )

        async def dispatched() -> list[dict[str, Any]]:
            response = await aws["sqs"].receive_message(
                QueueUrl=queue, WaitTimeSeconds=1, VisibilityTimeout=0
            )
            return list(response.get("Messages", []))

        [message] = await eventually(dispatched, timeout=30, what="the transfer message")
        # A duplicate dispatch: the same command under a second message id.
        await aws["sqs"].send_message(QueueUrl=queue, MessageBody=message["Body"])
        env = stack.service_env(routes, CONVEYOR_VISIBILITY_TIMEOUT="5")
        logs = [tmp_path / "one.log", tmp_path / "two.log"]
        workers = [service_process("conveyor_transfer_sftp", log, env) for log in logs]
        try:
            async with watch_final_name(final, len(data)) as wrong_sizes:
                entry = await eventually(
                    lambda: settled(aws, stack), timeout=90, what="the delivery"
                )

                async def both_messages_done() -> bool:
                    attributes = await aws["sqs"].get_queue_attributes(
                        QueueUrl=queue,
                        AttributeNames=[
                            "ApproximateNumberOfMessages",
                            "ApproximateNumberOfMessagesNotVisible",
                        ],
                    )
                    counts = attributes["Attributes"]
                    return (
                        counts["ApproximateNumberOfMessages"],
                        counts["ApproximateNumberOfMessagesNotVisible"],
                    ) == ("0", "0")

                # The duplicate waits out the first worker's lease (60 s) before it
                # finds the file settled.
                await eventually(both_messages_done, timeout=150, what="both messages handled")
        finally:
            for worker in workers:
                worker.stop()
    assert wrong_sizes == []
    assert hashlib.sha256(final.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert (entry["status"], entry["sendAttempts"]) == ("success", 1)
    assert len(events(logs, "transfer.delivered")) == 1
    assert sorted(p.name for p in (sshd.root / directory).iterdir()) == ["claims.bin"]


async def test_a_stopped_worker_hands_its_file_back_at_once_without_counting_the_attempt(
    stack: Stack,
    aws: dict[str, Any],
    sshd: servers.Sshd,
    tmp_path: Path,
    unique: str,
    services: InProcessServices,
) -> None:
    directory = f"stopped-{unique}"
    (sshd.root / directory).mkdir()
    data = os.urandom(40 * MiB)
    async with TcpProxy(sshd.port, bytes_per_second=4 * MiB) as slow_link:
        routes = await sftp_route(
            stack, aws, sshd, tmp_path / "routes.yaml", CLIENT, directory, slow_link.port
        )
        start_scanner(services, stack, routes)
        # A visibility timeout far longer than the test: the file can only move
        # on this quickly if the stopping worker handed its message back.
        env = stack.service_env(
            routes, CONVEYOR_VISIBILITY_TIMEOUT="600", CONVEYOR_DRAIN_SECONDS="0"
        )
        logs = [tmp_path / "stopping.log", tmp_path / "next.log"]
        stopping = service_process("conveyor_transfer_sftp", logs[0], env)
        successor: ManagedProcess | None = None
        try:
            await aws["s3"].put_object(
                Bucket=stack.pickup_bucket, Key=f"{CLIENT}/census.bin", Body=data
            )

            await eventually(lambda: in_flight(aws, stack), timeout=60, what="progress")
            os.kill(stopping.pid, signal.SIGTERM)
            await eventually(lambda: _exited(stopping), timeout=30, what="the worker to stop")
            successor = service_process("conveyor_transfer_sftp", logs[1], env)
            entry = await eventually(lambda: settled(aws, stack), timeout=60, what="delivery")
        finally:
            stopping.stop()
            if successor is not None:
                successor.stop()
    assert events([logs[0]], "transfer.released")
    assert (entry["status"], entry["sendAttempts"]) == ("success", 1)
    assert [a["outcome"] for a in entry["attempts"]] == ["success"]
    final = sshd.root / directory / "census.bin"
    assert hashlib.sha256(final.read_bytes()).digest() == hashlib.sha256(data).digest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _exited(process: ManagedProcess) -> bool:
    return not process.running()


async def test_a_destination_down_for_a_while_is_retried_on_schedule_until_it_is_back(
    stack: Stack,
    aws: dict[str, Any],
    sshd: servers.Sshd,
    tmp_path: Path,
    unique: str,
    services: InProcessServices,
) -> None:
    """The route's retry schedule, scaled down from minutes to seconds: the
    server is unreachable for the first two attempts and back for the third."""
    directory = f"outage-{unique}"
    (sshd.root / directory).mkdir()
    port = free_port()
    routes = await sftp_route(
        stack,
        aws,
        sshd,
        tmp_path / "routes.yaml",
        CLIENT,
        directory,
        port,
        retry_delays_seconds=[2, 4],
    )
    start_scanner(services, stack, routes)
    services.start(
        run_transfer_sftp,
        TransferSettings(
            stack=stack.name, routes_uri=str(routes), environment="test", receive_wait_seconds=1
        ),
    )
    await aws["s3"].put_object(
        Bucket=stack.pickup_bucket, Key=f"{CLIENT}/weekly.csv", Body=b"member,plan\n1,A\n"
    )

    async def failed_twice() -> bool:
        entry = await the_entry(aws, stack)
        return bool(entry) and len(entry.get("attempts", [])) >= 2

    await eventually(failed_twice, timeout=60, what="two failed attempts")
    async with TcpProxy(sshd.port, port=port):  # the server is back
        entry = await eventually(lambda: settled(aws, stack), timeout=60, what="delivery")
    assert (entry["status"], entry["sendAttempts"]) == ("success", 3)
    attempts = entry["attempts"]
    assert [a["outcome"] for a in attempts] == ["failed", "failed", "success"]
    assert all("127.0.0.1" in a["error"] for a in attempts[:2])
    at = [parse_iso(a["at"]) for a in attempts]
    assert (at[1] - at[0]).total_seconds() >= 2, "the first retry waited for its delay"
    assert (at[2] - at[1]).total_seconds() >= 4, "the second retry waited for its delay"
    assert (sshd.root / directory / "weekly.csv").read_bytes() == b"member,plan\n1,A\n"


async def test_a_correction_uploaded_while_the_first_is_in_flight_is_delivered_after_it(
    stack: Stack,
    aws: dict[str, Any],
    sshd: servers.Sshd,
    tmp_path: Path,
    unique: str,
    services: InProcessServices,
) -> None:
    """Two versions of one key: each is a file of its own, read, archived and
    deleted by its own VersionId; the correction lands last and the archive
    ends with exactly the bytes delivered last."""
    directory = f"corrected-{unique}"
    (sshd.root / directory).mkdir()
    final = sshd.root / directory / "eligibility.bin"
    first, correction = os.urandom(24 * MiB), os.urandom(1 * MiB)
    key = f"{CLIENT}/eligibility.bin"
    async with TcpProxy(sshd.port, bytes_per_second=2 * MiB) as slow_link:
        routes = await sftp_route(
            stack,
            aws,
            sshd,
            tmp_path / "routes.yaml",
            CLIENT,
            directory,
            slow_link.port,
            after_delivery="archive",
            archive=f"s3://{stack.pickup_bucket}/archive/",
        )
        start_scanner(services, stack, routes)
        services.start(
            run_transfer_sftp,
            TransferSettings(
                stack=stack.name,
                routes_uri=str(routes),
                environment="test",
                receive_wait_seconds=1,
            ),
        )
        await aws["s3"].put_object(Bucket=stack.pickup_bucket, Key=key, Body=first)

        await eventually(
            lambda: in_flight(aws, stack), timeout=60, what="the first version in flight"
        )
        await aws["s3"].put_object(Bucket=stack.pickup_bucket, Key=key, Body=correction)

        async def both_delivered() -> list[dict[str, Any]]:
            items = await ledger_items(aws["dynamodb"], stack, CLIENT)
            done = [i for i in items if i["status"] == "success"]
            return done if len(done) == 2 else []

        entries = await eventually(both_delivered, timeout=120, what="both versions delivered")

        async def archived_last() -> bool:
            listed = await aws["s3"].list_objects_v2(
                Bucket=stack.pickup_bucket, Prefix="archive/eligibility.bin"
            )
            return [o["Size"] for o in listed.get("Contents", [])] == [len(correction)]

        await eventually(archived_last, timeout=30, what="the correction archived last")
    by_size = {int(e["size"]): e for e in entries}
    assert by_size[len(first)]["deliveredAt"] < by_size[len(correction)]["deliveredAt"]
    assert sha256(final.read_bytes()) == sha256(correction)
    archived = await aws["s3"].get_object(Bucket=stack.pickup_bucket, Key="archive/eligibility.bin")
    assert sha256(await archived["Body"].read()) == sha256(correction)

    # Both versions leave the pick-up; no delete marker hides anything.
    async def pickup_versions_left() -> list[Any]:
        listed = await aws["s3"].list_object_versions(Bucket=stack.pickup_bucket, Prefix=CLIENT)
        return [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]

    await eventually(
        lambda: _none_left(pickup_versions_left), timeout=10, what="the pick-up emptied"
    )


async def test_a_rotated_key_is_read_again_instead_of_failing_the_file(
    stack: Stack,
    aws: dict[str, Any],
    sshd: servers.Sshd,
    tmp_path: Path,
    unique: str,
    services: InProcessServices,
) -> None:
    """The worker holds the secret it read for the first route; then the key
    is rotated on the server and in Secrets Manager. The next login with the
    cached key is refused: the worker reads the secret again and delivers."""
    directory = f"rotated-{unique}"
    (sshd.root / directory).mkdir()
    secret = f"{stack.name}/rotated"
    await aws["secretsmanager"].create_secret(
        Name=secret, SecretString=json.dumps({"private_key": sshd.private_key})
    )

    def route(client_id: str, max_sessions: int) -> dict[str, Any]:
        # Two pools (the session limits differ) that share one secret.
        return {
            "name": f"rotated {client_id}",
            "client_id": client_id,
            "contacts": ["ops@example.com"],
            "pickup": f"s3://{stack.pickup_bucket}/{client_id}/",
            "destination": {
                "type": "sftp",
                "host": "127.0.0.1",
                "port": sshd.port,
                "username": sshd.username,
                "directory": directory,
                "host_keys": [sshd.host_key],
                "credentials": {"secret": secret},
                "max_sessions": max_sessions,
            },
        }

    routes = write_routes(tmp_path / "routes.yaml", [route("H3201", 4), route("H3202", 3)])
    start_scanner(services, stack, routes)
    services.start(
        run_transfer_sftp,
        TransferSettings(
            stack=stack.name, routes_uri=str(routes), environment="test", receive_wait_seconds=1
        ),
    )
    await aws["s3"].put_object(Bucket=stack.pickup_bucket, Key="H3201/before.csv", Body=b"a\n")

    async def first_delivered() -> bool:
        return (sshd.root / directory / "before.csv").exists()

    await eventually(first_delivered, timeout=60, what="the delivery with the first key")
    authorized = sshd.client_key_path.parent / "authorized_keys"
    original = authorized.read_text()
    rotated = asyncssh.generate_private_key("ssh-ed25519")
    try:
        authorized.write_text(rotated.export_public_key().decode())
        await aws["secretsmanager"].put_secret_value(
            SecretId=secret,
            SecretString=json.dumps({"private_key": rotated.export_private_key().decode()}),
        )
        await aws["s3"].put_object(Bucket=stack.pickup_bucket, Key="H3202/after.csv", Body=b"b\n")

        async def delivered() -> dict[str, Any] | None:
            items = await ledger_items(aws["dynamodb"], stack, "H3202")
            return items[0] if items and items[0]["status"] != "processing" else None

        entry = await eventually(delivered, timeout=60, what="the delivery after rotation")
    finally:
        authorized.write_text(original)
    assert (entry["status"], entry["sendAttempts"]) == ("success", 1)
    assert (sshd.root / directory / "after.csv").read_bytes() == b"b\n"
