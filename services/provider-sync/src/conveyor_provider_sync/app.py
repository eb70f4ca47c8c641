"""Wiring of the provider-sync service."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextlib import AsyncExitStack

import structlog

from conveyor_provider_sync.fetch import SourceFetch, Stores
from conveyor_provider_sync.handlers import SyncHandler
from conveyor_provider_sync.handoff import HandOff
from conveyor_provider_sync.overdue import OverdueSources
from conveyor_provider_sync.poll import SourcePoll
from conveyor_provider_sync.settings import ProviderSyncSettings
from conveyor_shared.config.loader import RoutesSource
from conveyor_shared.ledger.locks import Leases
from conveyor_shared.ledger.received import ReceivedLedger
from conveyor_shared.messaging.consumer import QueueConsumer
from conveyor_shared.messaging.publisher import CommandSender, EventPublisher
from conveyor_shared.runtime import open_clients, run_consumers, stop_event_on_signals
from conveyor_shared.secrets import SecretStore
from conveyor_shared.sync.remote import ByProtocol, SourceOpener, installed_openers

log = structlog.get_logger("conveyor.provider_sync")

MiB = 1024 * 1024


async def run(
    settings: ProviderSyncSettings,
    stop: asyncio.Event | None = None,
    openers: Mapping[str, SourceOpener] | None = None,
) -> None:
    """Run until ``stop`` is set (by default: until SIGTERM or SIGINT).
    ``openers`` reach the servers, one per protocol; by default every backend
    this deployment has."""
    structlog.contextvars.bind_contextvars(service="provider-sync")
    names = settings.names
    async with AsyncExitStack() as stack:
        aws = await open_clients(stack, settings)
        routes = RoutesSource(settings.routes_uri, aws.s3)
        await routes.get()  # refuse to start on an invalid routes file
        leases = Leases(aws.dynamodb, names.locks_table)
        ledger = ReceivedLedger(aws.dynamodb, names.received_table)
        secrets = SecretStore(aws.secrets)
        if openers is None:
            openers = await installed_openers(stack, secrets)
        opener = ByProtocol(openers)
        poll_url = await aws.queue_url(names.sync_poll_queue)
        fetch_url = await aws.queue_url(names.sync_fetch_queue)
        publisher = EventPublisher(
            aws.sns, await aws.topic_arn(names.events_topic, settings.region)
        )
        fetches = CommandSender(aws.sqs, fetch_url)
        handler = SyncHandler(
            routes=routes,
            polls=CommandSender(aws.sqs, poll_url),
            fetches=fetches,
            poll=SourcePoll(
                leases=leases,
                ledger=ledger,
                opener=opener,
                fetches=fetches,
                lease_seconds=settings.poll_lease_seconds,
            ),
            fetch=SourceFetch(
                leases=leases,
                ledger=ledger,
                opener=opener,
                stores=Stores(aws.s3, settings.part_mib * MiB, settings.parts_in_flight),
                handoff=HandOff(publisher, ledger),
                lease_seconds=settings.fetch_lease_seconds,
            ),
            busy_retry_seconds=settings.busy_retry_seconds,
            overdue=OverdueSources(aws.dynamodb, names.locks_table),
        )
        consumers = [
            QueueConsumer(
                aws.sqs,
                url,
                handler.handle,
                concurrency=concurrency,
                visibility_timeout=settings.visibility_timeout,
                wait_seconds=settings.receive_wait_seconds,
            )
            for url, concurrency in (
                (poll_url, settings.poll_concurrency),
                (fetch_url, settings.concurrency),
            )
        ]
        log.info("service.started", routes=routes.uri, protocols=sorted(openers))
        await run_consumers(consumers, stop or stop_event_on_signals())
