"""Wiring of the scanner service."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import structlog

from conveyor_scanner.arrivals import ArrivalLog
from conveyor_scanner.batches import JobBatches
from conveyor_scanner.done_files import DoneFileBatches
from conveyor_scanner.handlers import ScannerHandler, arrivals_recorder
from conveyor_scanner.identities import KnownIdentities
from conveyor_scanner.recorder import JobRecorder
from conveyor_scanner.scan import HealthCheck, ScheduledScan
from conveyor_scanner.settings import ScannerSettings
from conveyor_shared.config.loader import RoutesSource
from conveyor_shared.config.models import DESTINATION_TYPES, Route
from conveyor_shared.delivery.jobs import JobCompletion
from conveyor_shared.ledger.batches import BatchRules, OpenBatches
from conveyor_shared.ledger.files import FileLedger
from conveyor_shared.ledger.jobs import JobLedger
from conveyor_shared.ledger.locks import Leases
from conveyor_shared.messaging.batching import BatchWindow
from conveyor_shared.messaging.consumer import QueueConsumer
from conveyor_shared.messaging.publisher import CommandSender, EventPublisher
from conveyor_shared.runtime import open_clients, run_consumers, stop_event_on_signals

log = structlog.get_logger("conveyor.scanner")


async def run(settings: ScannerSettings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (by default: until SIGTERM or SIGINT)."""
    structlog.contextvars.bind_contextvars(service="scanner")
    names = settings.names
    async with AsyncExitStack() as stack:
        aws = await open_clients(stack, settings)
        files = FileLedger(aws.dynamodb, names.files_table)
        jobs = JobLedger(aws.dynamodb, names.jobs_table, settings.job_retention_days)
        publisher = EventPublisher(
            aws.sns, await aws.topic_arn(names.events_topic, settings.region)
        )
        senders: dict[str, CommandSender] = {
            kind: CommandSender(aws.sqs, await aws.queue_url(names.transfer_queue(kind)))
            for kind in DESTINATION_TYPES
        }
        scanner_queue = await aws.queue_url(names.scanner_queue)
        routes = RoutesSource(settings.routes_uri, aws.s3)
        await routes.get()  # refuse to start on an invalid routes file
        completion = JobCompletion(files, jobs, publisher)
        # How arrivals are grouped in jobs (docs/architecture.md, "How batches form").
        batches = JobBatches(
            batches=OpenBatches(aws.dynamodb, names.locks_table),
            jobs=jobs,
            files=files,
            completion=completion,
            publisher=publisher,
            due=CommandSender(aws.sqs, scanner_queue),
            rules=BatchRules(
                quiet_seconds=settings.batch_window_seconds,
                max_wait_seconds=settings.batch_max_wait_seconds,
                max_files=settings.batch_max_files,
            ),
            repair_grace_seconds=settings.repair_grace_seconds,
        )
        identities = KnownIdentities(aws.dynamodb, names.locks_table)
        recorder = JobRecorder(
            files=files,
            jobs=jobs,
            batches=batches,
            senders=senders,
            publisher=publisher,
            s3_client=aws.s3,
            repair_grace=settings.repair_grace_seconds,
            identities=identities,
            legacy_identities=settings.legacy_identities,
        )
        leases = Leases(aws.dynamodb, names.locks_table)
        arrivals = ArrivalLog(aws.dynamodb, names.locks_table)
        done_files = DoneFileBatches(
            recorder, aws.s3, arrivals, leases, lease_seconds=settings.scan_lease_seconds
        )
        health = HealthCheck(
            files=files,
            jobs=jobs,
            recorder=recorder,
            batches=batches,
            publisher=publisher,
            completion=completion,
            s3_client=aws.s3,
            stale_after=settings.stale_after_seconds,
            max_attempts=settings.max_attempts,
        )
        scan = ScheduledScan(
            leases=leases,
            routes=routes,
            recorder=recorder,
            done_files=done_files,
            health=health,
            files=files,
            identities=identities,
            s3_client=aws.s3,
            lease_seconds=settings.scan_lease_seconds,
            batch_max_files=settings.batch_max_files,
        )
        # Arrivals taken in together share one reservation; each is dispatched at once.
        window: BatchWindow[tuple[Route, str]] = BatchWindow(
            arrivals_recorder(recorder),
            quiet_seconds=settings.arrival_coalesce_seconds,
            max_wait_seconds=settings.arrival_coalesce_seconds * 4,
            max_items=min(100, settings.batch_max_files),
        )
        handler = ScannerHandler(routes, window, done_files, arrivals, recorder, scan, batches)
        consumer = QueueConsumer(
            aws.sqs,
            scanner_queue,
            handler.handle,
            concurrency=settings.concurrency,
            receivers=settings.receivers,
            visibility_timeout=settings.visibility_timeout,
            wait_seconds=settings.receive_wait_seconds,
            linger_seconds=settings.ack_linger_seconds,
            gather_seconds=settings.receive_gather_seconds,
        )
        log.info("service.started", queue=names.scanner_queue, routes=routes.uri)
        await run_consumers([consumer], stop or stop_event_on_signals())
