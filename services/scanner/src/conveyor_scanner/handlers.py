"""What the scanner does with each message on its queue."""

from __future__ import annotations

import asyncio

import structlog

from conveyor_scanner.arrivals import ArrivalLog
from conveyor_scanner.batches import JobBatches
from conveyor_scanner.done_files import DoneFileBatches
from conveyor_scanner.keys import is_folder_placeholder
from conveyor_scanner.recorder import JobRecorder
from conveyor_scanner.scan import ScheduledScan
from conveyor_shared.config.loader import RoutesSource
from conveyor_shared.config.models import Route
from conveyor_shared.config.validate import QUARANTINE_PREFIX
from conveyor_shared.messaging.batching import BatchWindow, Flush
from conveyor_shared.messaging.consumer import ReceivedMessage
from conveyor_shared.messaging.envelopes import MalformedMessage, parse_body
from conveyor_shared.messaging.models import (
    BatchDue,
    PickupRecheck,
    S3Notification,
    S3ObjectCreated,
    S3TestEvent,
    ScanRequested,
)

log = structlog.get_logger("conveyor.scanner")


def arrivals_recorder(recorder: JobRecorder) -> Flush[tuple[Route, str]]:
    """Records the arrivals of one client taken in together (a few milliseconds'
    worth: ``arrival_coalesce_seconds``) with one reservation in its batch."""

    async def record(_client_id: str, arrivals: list[tuple[Route, str]]) -> None:
        await recorder.arrived(arrivals[0][0], [key for _, key in arrivals])

    return record


class ScannerHandler:
    def __init__(
        self,
        routes: RoutesSource,
        window: BatchWindow[tuple[Route, str]],
        done_files: DoneFileBatches,
        arrivals: ArrivalLog,
        recorder: JobRecorder,
        scan: ScheduledScan,
        batches: JobBatches,
    ) -> None:
        self._routes = routes
        self._window = window
        self._done_files = done_files
        self._arrivals = arrivals
        self._recorder = recorder
        self._scan = scan
        self._batches = batches

    async def handle(self, message: ReceivedMessage) -> None:
        parsed = parse_body(message.body)
        if isinstance(parsed, S3TestEvent):
            log.info("s3.test_event", bucket=parsed.bucket)
        elif isinstance(parsed, S3Notification):
            await asyncio.gather(*(self._arrived(record) for record in parsed.records))
        elif isinstance(parsed, ScanRequested):
            await self._scan.run(reason=parsed.reason)
        elif isinstance(parsed, PickupRecheck):
            await self._recheck(parsed)
        elif isinstance(parsed, BatchDue):
            await self._batches.due(parsed)
        else:
            raise MalformedMessage(f"the scanner does not handle {type(parsed).__name__}")

    async def _recheck(self, held: PickupRecheck) -> None:
        route = (await self._routes.get()).route_for_object(held.bucket, held.key)
        if route is None:
            log.warning(
                "pickup.unknown_location",
                bucket=held.bucket,
                key=held.key,
                reason="the routes changed since it was held; the next scan decides",
            )
            return
        await self._recorder.recheck(route, held.key, held.version)

    async def _arrived(self, record: S3ObjectCreated) -> None:
        if record.key.startswith(QUARANTINE_PREFIX):
            log.debug("pickup.quarantine_ignored", key=record.key)
            return
        route = (await self._routes.get()).route_for_object(record.bucket, record.key)
        if route is None:
            log.warning(
                "pickup.unknown_location",
                bucket=record.bucket,
                key=record.key,
                reason="no route's pick-up contains this key",
            )
            return
        if is_folder_placeholder(record.key):
            log.debug("pickup.folder_ignored", key=record.key)
            return
        if route.trigger_on_done_file:
            if record.event_time is not None:
                await self._arrivals.note(
                    record.bucket, record.key, record.etag or "", record.event_time
                )
            if record.key == route.done_file_key:
                await self._done_files.take(route, done_at=record.event_time)
            else:
                log.info(
                    "pickup.waiting_for_done_file",
                    client_id=route.client_id,
                    key=record.key,
                    done_file=route.done_file_key,
                )
            return
        log.info("pickup.arrived", client_id=route.client_id, key=record.key, size=record.size)
        await self._window.add(route.client_id, (route, record.key))
