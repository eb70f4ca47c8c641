"""Helpers the tests share: waiting for conditions, writing routes files,
running services in-process or as real processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from conveyor_cli.localstack.processes import ManagedProcess
from conveyor_scanner.app import run as run_scanner
from conveyor_scanner.settings import ScannerSettings

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T]],
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Await ``check()`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def write_routes(path: Path, routes: list[dict[str, Any]], **top: Any) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, **top, "routes": routes}, sort_keys=False))
    return path


async def sftp_route(
    stack: Stack,
    aws: dict[str, Any],
    sshd: Any,
    path: Path,
    client_id: str,
    directory: str,
    port: int,
    **route: Any,
) -> Path:
    """A routes file with one route from ``client_id``'s pick-up to ``sshd``
    (through ``port``), its key in a new secret; ``route`` overrides fields."""
    secret = f"{stack.name}/sftp-{client_id}"
    await aws["secretsmanager"].create_secret(
        Name=secret, SecretString=json.dumps({"private_key": sshd.private_key})
    )
    return write_routes(
        path,
        [
            {
                "name": f"client {client_id}",
                "client_id": client_id,
                "contacts": ["ops@example.com"],
                "pickup": f"s3://{stack.pickup_bucket}/{client_id}/",
                "destination": {
                    "type": "sftp",
                    "host": "127.0.0.1",
                    "port": port,
                    "username": sshd.username,
                    "directory": directory,
                    "host_keys": [sshd.host_key],
                    "credentials": {"secret": secret},
                },
                **route,
            }
        ],
    )


@dataclass
class Stack:
    """One deployment of deploy/conveyor.yaml in moto, private to a test."""

    name: str
    pickup_bucket: str
    outputs: dict[str, str]

    def service_env(self, routes: Path, **extra: str) -> dict[str, str]:
        return {
            "CONVEYOR_STACK": self.name,
            "CONVEYOR_ROUTES_URI": str(routes),
            "CONVEYOR_ENVIRONMENT": "test",
            "CONVEYOR_RECEIVE_WAIT_SECONDS": "1",
            "CONVEYOR_LOG_JSON": "true",
            **extra,
        }


@dataclass
class InProcessServices:
    """Services' ``run()`` coroutines as tasks of the test's event loop."""

    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self, run: Callable[..., Coroutine[Any, Any, None]], settings: Any) -> None:
        self.tasks.append(asyncio.create_task(run(settings, self.stop)))

    async def close(self) -> None:
        self.stop.set()
        done, pending = await asyncio.wait(self.tasks, timeout=20) if self.tasks else (set(), set())
        for task in pending:
            task.cancel()
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]


def start_scanner(services: InProcessServices, stack: Stack, routes: Path | str) -> None:
    """The scanner as a task of the test's event loop, with a short batch window."""
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


@dataclass
class ScannerParts:
    """The scanner's pieces over the test stack, for tests that drive them directly."""

    files: Any
    jobs: Any
    batches: Any
    completion: Any
    publisher: Any
    recorder: Any


async def scanner_parts(
    aws: dict[str, Any],
    stack: Stack,
    transfer_url: str,
    *,
    repair_grace: float = 0.0,
    identities: Any = None,
    quiet_seconds: float = 0.3,
) -> ScannerParts:
    from conveyor_scanner.batches import JobBatches
    from conveyor_scanner.recorder import JobRecorder
    from conveyor_shared.delivery import JobCompletion
    from conveyor_shared.ledger import FileLedger, JobLedger
    from conveyor_shared.ledger.batches import BatchRules, OpenBatches
    from conveyor_shared.messaging import CommandSender, EventPublisher

    files = FileLedger(aws["dynamodb"], f"{stack.name}-files")
    jobs = JobLedger(aws["dynamodb"], f"{stack.name}-jobs")
    publisher = EventPublisher(aws["sns"], stack.outputs["EventsTopicArn"])
    completion = JobCompletion(files, jobs, publisher)
    batches = JobBatches(
        batches=OpenBatches(aws["dynamodb"], f"{stack.name}-locks"),
        jobs=jobs,
        files=files,
        completion=completion,
        publisher=publisher,
        due=CommandSender(aws["sqs"], await queue_url(aws["sqs"], f"{stack.name}-scanner")),
        rules=BatchRules(quiet_seconds=quiet_seconds, max_wait_seconds=30, max_files=1000),
        repair_grace_seconds=repair_grace,
    )
    recorder = JobRecorder(
        files=files,
        jobs=jobs,
        batches=batches,
        senders={"s3": CommandSender(aws["sqs"], transfer_url)},
        publisher=publisher,
        s3_client=aws["s3"],
        repair_grace=repair_grace,
        identities=identities,
    )
    return ScannerParts(files, jobs, batches, completion, publisher, recorder)


def service_process(module: str, log_path: Path, env: dict[str, str]) -> ManagedProcess:
    """A service as a real OS process (for crash tests and the log format)."""
    return ManagedProcess(
        module, [sys.executable, "-m", module], log_path, env={**os.environ, **env}
    ).start()


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return lines


async def drain(sqs: Any, queue_url: str, *, settle: float = 1.0) -> list[dict[str, Any]]:
    """Receive every message now on the queue (hiding each for five minutes, so
    none is counted twice), stopping after ``settle`` seconds with nothing new."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        response = await sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=300,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        batch = response.get("Messages", [])
        if batch:
            messages.extend(batch)
            deadline = time.monotonic() + settle
        else:
            await asyncio.sleep(0.1)
    return messages


async def bodies(sqs: Any, queue_url: str, settle: float = 1.0) -> list[dict[str, Any]]:
    return [json.loads(m["Body"]) for m in await drain(sqs, queue_url, settle=settle)]


async def queue_url(sqs: Any, name: str) -> str:
    return str((await sqs.get_queue_url(QueueName=name))["QueueUrl"])


async def queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    """How many messages the queue holds: (visible, in flight)."""
    attributes = (
        await sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


async def subscribe_events(aws: dict[str, Any], stack: Stack) -> str:
    """A queue receiving every event the stack publishes on its SNS topic (raw)."""
    sqs, sns = aws["sqs"], aws["sns"]
    url = (await sqs.create_queue(QueueName=f"{stack.name}-test-events"))["QueueUrl"]
    arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"][
        "QueueArn"
    ]
    await sns.subscribe(
        TopicArn=stack.outputs["EventsTopicArn"],
        Protocol="sqs",
        Endpoint=arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    return str(url)


async def ledger_items(dynamodb: Any, stack: Stack, client_id: str) -> list[dict[str, Any]]:
    from conveyor_shared.ledger.dynamo import from_item

    paginator = dynamodb.get_paginator("query")
    items: list[dict[str, Any]] = []
    async for page in paginator.paginate(
        TableName=f"{stack.name}-files",
        KeyConditionExpression="clientId = :c",
        ExpressionAttributeValues={":c": {"S": client_id}},
        ConsistentRead=True,
    ):
        items.extend(from_item(i) for i in page["Items"])
    return items


async def all_jobs(dynamodb: Any, stack: Stack) -> list[dict[str, Any]]:
    from conveyor_shared.ledger.dynamo import from_item

    paginator = dynamodb.get_paginator("scan")
    jobs: list[dict[str, Any]] = []
    async for page in paginator.paginate(TableName=f"{stack.name}-jobs", ConsistentRead=True):
        jobs.extend(from_item(i) for i in page["Items"])
    return jobs


class TcpProxy:
    """Forwards 127.0.0.1 connections to the ``upstream`` port: a link a test
    can make slow (``bytes_per_second``, client to server) or break (the first
    connection is cut, both ways at once, after the client sent ``cut_after``
    bytes through it)."""

    def __init__(
        self,
        upstream: int,
        *,
        bytes_per_second: int | None = None,
        cut_after: int | None = None,
        port: int = 0,
    ) -> None:
        self.upstream = upstream
        self.rate = bytes_per_second
        self.cut_after = cut_after
        self.connections = 0
        self.cut = False
        self.port = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        limit = self.cut_after if self.connections == 0 else None
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
            pumps = [
                asyncio.create_task(self._pump(reader, up_writer, self.rate, limit)),
                asyncio.create_task(self._pump(up_reader, writer, None, None)),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
            up_writer.transport.abort()
        except OSError:
            pass
        finally:
            writer.transport.abort()
            self._tasks.discard(task)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        rate: int | None,
        limit: int | None,
    ) -> None:
        started, passed = time.monotonic(), 0
        while data := await source.read(64 * 1024):
            if limit is not None and passed + len(data) > limit:
                self.cut = True
                return
            sink.write(data)
            await sink.drain()
            passed += len(data)
            if rate is not None:
                ahead = passed / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)


@contextlib.asynccontextmanager
async def watch_final_name(path: Path, size: int) -> AsyncIterator[list[int]]:
    """Every size other than ``size`` seen under ``path`` while the block runs:
    a partial file visible under its final name."""
    wrong: list[int] = []

    def look() -> None:
        with contextlib.suppress(FileNotFoundError):
            seen = path.stat().st_size
            if seen != size:
                wrong.append(seen)

    async def watch() -> None:
        while True:
            await asyncio.to_thread(look)
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    try:
        yield wrong
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
