"""Prometheus metrics: files delivered and failed, bytes delivered, arrival
to delivery latency, queue depths.

A background task reads what settled since its last look from the
``byStatus`` index (a ``Query`` per status, never a ``Scan``) and each
queue's depth, every ``metrics_refresh_seconds``. Counters start at zero
when the process starts, which Prometheus reads as a counter reset."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from conveyor_api.context import ApiContext
from conveyor_api.models import FileSummary
from conveyor_api.read import FileQuery, iter_files, queue_depths
from conveyor_shared.ledger.dynamo import now_iso, parse_iso
from conveyor_shared.ledger.models import FileStatus

log = structlog.get_logger("conveyor.api")


class DeliveryMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.files = Counter(
            "conveyor_files", "Files settled", ["client", "status"], registry=self.registry
        )
        self.bytes = Counter(
            "conveyor_delivered_bytes", "Bytes delivered", ["client"], registry=self.registry
        )
        self.latency = Histogram(
            "conveyor_arrival_to_delivery_seconds",
            "From the recording of a file's job (its arrival) to its delivery",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600),
            registry=self.registry,
        )
        self.depth = Gauge(
            "conveyor_queue_messages", "Messages waiting", ["queue"], registry=self.registry
        )
        self.dead = Gauge(
            "conveyor_dead_letters",
            "Messages in a dead-letter queue",
            ["queue"],
            registry=self.registry,
        )
        self._since = now_iso()

    async def refresh(self, ctx: ApiContext) -> None:
        until = now_iso()
        started: dict[str, str | None] = {}
        for status in (FileStatus.SUCCESS, FileStatus.FAIL):
            query = FileQuery(status=status, since=parse_iso(self._since), until=parse_iso(until))
            async for item in iter_files(ctx, query, 100_000):
                if item.timestamp >= until:
                    continue
                self.files.labels(item.client_id, status.value).inc()
                if status is FileStatus.SUCCESS:
                    self.bytes.labels(item.client_id).inc(item.size or 0)
                    await self._observe_latency(ctx, item, started)
        self._since = until
        for depth in await queue_depths(ctx):
            self.depth.labels(depth.name).set(depth.visible + depth.delayed)
            if depth.dead_letter_queue is not None:
                self.dead.labels(depth.dead_letter_queue).set(depth.dead_letters or 0)

    async def _observe_latency(
        self, ctx: ApiContext, item: FileSummary, started: dict[str, str | None]
    ) -> None:
        """From when the file's job was recorded (moments after the file arrived,
        or when an operator resent it) to when it was delivered."""
        if item.job_id not in started:
            job = await ctx.jobs.get(item.job_id)
            started[item.job_id] = job.started_at if job else None
        entry = await ctx.files.get(item.client_id, item.content_id)
        begun = started[item.job_id]
        if entry is not None and entry.delivered_at and begun:
            seconds = (parse_iso(entry.delivered_at) - parse_iso(begun)).total_seconds()
            self.latency.observe(max(0.0, seconds))

    async def run(self, ctx: ApiContext, stop: asyncio.Event) -> None:
        interval = ctx.settings.metrics_refresh_seconds
        while interval > 0 and not stop.is_set():
            try:
                await self.refresh(ctx)
            except Exception as exc:  # a failed look must not end the API
                log.warning("metrics.refresh_failed", error_type=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
