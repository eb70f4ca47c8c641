"""What every service's ``run()`` does: open its AWS clients, resolve queue
URLs by name, stop cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import structlog

from conveyor_shared import health, metrics
from conveyor_shared.aws import CLIENT_CONFIG, aws_session
from conveyor_shared.messaging.consumer import QueueConsumer
from conveyor_shared.settings import ConveyorSettings


@dataclass
class AwsClients:
    s3: Any
    sqs: Any
    sns: Any
    dynamodb: Any
    secrets: Any
    sts: Any

    async def queue_url(self, name: str) -> str:
        response = await self.sqs.get_queue_url(QueueName=name)
        return str(response["QueueUrl"])

    async def topic_arn(self, name: str, region: str) -> str:
        identity = await self.sts.get_caller_identity()
        return f"arn:aws:sns:{region}:{identity['Account']}:{name}"


async def open_clients(stack: AsyncExitStack, settings: ConveyorSettings) -> AwsClients:
    # The service's run() has bound its name; metrics keep it past the consumer's
    # per-message reset of the log context.
    service = structlog.contextvars.get_contextvars().get("service")
    if service:
        metrics.bind_service(settings.stack, service)
    session: Any = aws_session(settings.region)

    async def client(name: str) -> Any:
        return await stack.enter_async_context(session.client(name, config=CLIENT_CONFIG))

    return AwsClients(
        s3=await client("s3"),
        sqs=await client("sqs"),
        sns=await client("sns"),
        dynamodb=await client("dynamodb"),
        secrets=await client("secretsmanager"),
        sts=await client("sts"),
    )


def stop_event_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: stop taking work, finish what is in flight."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def run_consumers(consumers: Sequence[QueueConsumer], stop: asyncio.Event) -> None:
    """Run every consumer until ``stop``; if one dies, stop the others and re-raise.
    Meanwhile keep the health file fresh, if there is one (``conveyor_shared.health``):
    a file that cannot be written stops the service as loudly as a dead consumer."""
    tasks = [asyncio.create_task(c.run(stop)) for c in consumers]
    path = health.health_file()
    if path is not None:
        tasks.append(asyncio.create_task(health.beat(path, stop)))
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()
