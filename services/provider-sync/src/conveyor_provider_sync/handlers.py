"""What provider sync does with each message on its two queues."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog

from conveyor_provider_sync.fetch import SourceFetch
from conveyor_provider_sync.leases import Busy
from conveyor_provider_sync.overdue import OverdueSources
from conveyor_provider_sync.poll import SourcePoll
from conveyor_shared import metrics
from conveyor_shared.config.loader import RoutesSource
from conveyor_shared.config.sources import ProviderSource
from conveyor_shared.messaging.consumer import ReceivedMessage
from conveyor_shared.messaging.publisher import CommandSender
from conveyor_shared.sync.messages import FetchRequested, PollRequested, parse_command

log = structlog.get_logger("conveyor.provider_sync")


class SyncHandler:
    def __init__(
        self,
        *,
        routes: RoutesSource,
        polls: CommandSender,
        fetches: CommandSender,
        poll: SourcePoll,
        fetch: SourceFetch,
        busy_retry_seconds: int,
        overdue: OverdueSources,
    ) -> None:
        self._routes = routes
        self._polls = polls
        self._fetches = fetches
        self._poll = poll
        self._fetch = fetch
        self._busy_retry = busy_retry_seconds
        self._overdue = overdue

    async def _source(self, source_id: str) -> ProviderSource | None:
        found = next((s for s in (await self._routes.get()).sources if s.id == source_id), None)
        if found is None:
            log.warning("source.unknown", source=source_id, reason="not in the routes file now")
        return found

    async def handle(self, message: ReceivedMessage) -> None:
        command = parse_command(message.body)
        structlog.contextvars.bind_contextvars(source=getattr(command, "source_id", None))
        if isinstance(command, PollRequested):
            await self._on_poll(command)
        else:
            await self._on_fetch(command)

    async def _on_poll(self, command: PollRequested) -> None:
        if command.source_id is None:
            # The schedule's tick: one poll message per source; each decides
            # under its own lease whether it is due, so polls run in parallel.
            sources = (await self._routes.get()).sources
            await self._polls.send_many(
                [PollRequested(source_id=s.id, reason=command.reason) for s in sources]
            )
            metrics.sources_overdue(await self._overdue.count(sources, datetime.now(UTC)))
            return
        source = await self._source(command.source_id)
        if source is not None:
            try:
                await self._poll.run(source, force=command.force)
            except Busy:
                # Another replica is polling this source now: this request is served.
                log.info("poll.already_running", source=source.id)

    async def _on_fetch(self, command: FetchRequested) -> None:
        source = await self._source(command.source_id)
        if source is None:
            return
        try:
            await self._fetch.run(source, command)
        except Busy as exc:
            # Sent again, later, as a new message: waiting for a connection
            # slot must not use up the receives that lead to the dead-letter queue.
            log.info("fetch.busy", reason=str(exc), retry_in=self._busy_retry)
            await self._fetches.send(command, delay_seconds=self._busy_retry)
