"""The wiring every transfer service shares: one consumer on its queue, one on
its dead-letter queue, a ``DeliveryWorker`` in between. A service supplies
only its destination type and how to open its destinations."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Annotated

import structlog
from pydantic import BeforeValidator, Field
from pydantic_settings import NoDecode

from conveyor_shared.config.loader import RoutesSource
from conveyor_shared.delivery.cleanup import PickupCleaner
from conveyor_shared.delivery.destinations import DestinationFactory
from conveyor_shared.delivery.failures import DeadLetterHandler
from conveyor_shared.delivery.held import HeldDuplicates
from conveyor_shared.delivery.jobs import JobCompletion
from conveyor_shared.delivery.worker import DeliveryWorker
from conveyor_shared.ledger.files import FileLedger
from conveyor_shared.ledger.jobs import JobLedger
from conveyor_shared.ledger.paths import DestinationPaths
from conveyor_shared.messaging.consumer import QueueConsumer
from conveyor_shared.messaging.publisher import CommandSender, EventPublisher
from conveyor_shared.runtime import AwsClients, open_clients, run_consumers, stop_event_on_signals
from conveyor_shared.secrets import SecretStore
from conveyor_shared.settings import ConveyorSettings

log = structlog.get_logger("conveyor.transfer")


def _comma_separated(value: object) -> object:
    return [int(v) for v in value.split(",") if v.strip()] if isinstance(value, str) else value


class TransferSettings(ConveyorSettings):
    #: How long a claimed file stays ours unless renewed; the worker renews it
    #: every third of this while it works, so another replica takes the file
    #: over this long after a worker died.
    lease_seconds: int = Field(default=60, ge=3)
    #: On SIGTERM, how long transfers in flight may run on before they are
    #: interrupted and handed back (keep it below the container stop timeout).
    drain_seconds: float = Field(default=90.0, ge=0)
    #: Compare checksums after upload (sizes are always compared).
    verify: bool = True
    #: Seconds before a message whose handler crashed unexpectedly is received
    #: again, by receive (``CONVEYOR_RETRY_DELAYS=2,10,30``). A failed delivery
    #: attempt waits for its route's ``retry_delays_seconds`` instead.
    retry_delays: Annotated[list[int], NoDecode, BeforeValidator(_comma_separated)] = Field(
        default_factory=lambda: [2, 10, 30], min_length=1
    )


FactoryMaker = Callable[[AwsClients, SecretStore, AsyncExitStack], Awaitable[DestinationFactory]]


async def run_transfer_service(
    settings: TransferSettings,
    destination_type: str,
    make_factory: FactoryMaker,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until ``stop`` is set (by default: until SIGTERM or SIGINT)."""
    structlog.contextvars.bind_contextvars(service=f"transfer-{destination_type}")
    names = settings.names
    async with AsyncExitStack() as stack:
        aws = await open_clients(stack, settings)
        secrets = SecretStore(aws.secrets)
        factory = await make_factory(aws, secrets, stack)
        stack.push_async_callback(factory.close)
        files = FileLedger(aws.dynamodb, names.files_table)
        jobs = JobLedger(aws.dynamodb, names.jobs_table, settings.job_retention_days)
        publisher = EventPublisher(
            aws.sns, await aws.topic_arn(names.events_topic, settings.region)
        )
        completion = JobCompletion(
            files, jobs, publisher, count_linger_seconds=settings.ack_linger_seconds
        )
        cleaner = PickupCleaner(aws.s3, linger_seconds=settings.ack_linger_seconds)
        # After the consumers stop: what they settled is counted and cleaned up.
        stack.push_async_callback(completion.close)
        stack.push_async_callback(cleaner.close)
        queue = names.transfer_queue(destination_type)
        queue_url = await aws.queue_url(queue)
        held = HeldDuplicates(aws.sqs, await aws.queue_url(names.scanner_queue))
        worker = DeliveryWorker(
            destination_type=destination_type,
            files=files,
            routes=RoutesSource(settings.routes_uri, aws.s3),
            destinations=factory,
            s3_client=aws.s3,
            publisher=publisher,
            completion=completion,
            secrets=secrets,
            after_settle=held.release,
            paths=DestinationPaths(aws.dynamodb, names.locks_table, files.claim_ended),
            lease_seconds=settings.lease_seconds,
            verify=settings.verify,
            cleaner=cleaner,
        )
        dead_letters = DeadLetterHandler(
            files,
            publisher,
            completion,
            requeue=CommandSender(aws.sqs, queue_url),
            after_settle=held.release,
        )
        consumers = [
            QueueConsumer(
                aws.sqs,
                queue_url,
                worker.handle,
                concurrency=settings.concurrency,
                visibility_timeout=settings.visibility_timeout,
                wait_seconds=settings.receive_wait_seconds,
                retry_delays=settings.retry_delays,
                drain_seconds=settings.drain_seconds,
                linger_seconds=settings.ack_linger_seconds,
                gather_seconds=settings.receive_gather_seconds,
            ),
            QueueConsumer(
                aws.sqs,
                await aws.queue_url(names.dead_letter_queue(queue)),
                dead_letters.handle,
                concurrency=2,
                visibility_timeout=60,
                wait_seconds=settings.receive_wait_seconds,
                drain_seconds=settings.drain_seconds,
            ),
        ]
        log.info("service.started", queue=queue, instance=uuid.uuid4().hex[:8])
        await run_consumers(consumers, stop or stop_event_on_signals())
