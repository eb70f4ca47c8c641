"""One poll of one source (S1, S2): list, compare each file with its own
state, record new looks, ask for one fetch per settled new or changed file,
and mark files gone from the server ``source_deleted``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog

from conveyor_provider_sync.leases import connection_slot, holding
from conveyor_provider_sync.overdue import poll_lease
from conveyor_shared.config.sources import ProviderSource
from conveyor_shared.ledger.dynamo import now_iso, older_than
from conveyor_shared.ledger.locks import Leases
from conveyor_shared.ledger.received import ReceivedLedger
from conveyor_shared.messaging.publisher import CommandSender
from conveyor_shared.sync.check import known_states, list_source, plan_poll
from conveyor_shared.sync.detect import Decision, Verdict
from conveyor_shared.sync.messages import FetchRequested
from conveyor_shared.sync.remote import SourceOpener
from conveyor_shared.transfer.protocols import ObjectInfo

log = structlog.get_logger("conveyor.provider_sync")


@dataclass
class PollReport:
    source_id: str
    polled: bool
    listed: int = 0
    fetches: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)


class SourcePoll:
    def __init__(
        self,
        *,
        leases: Leases,
        ledger: ReceivedLedger,
        opener: SourceOpener,
        fetches: CommandSender,
        lease_seconds: int,
    ) -> None:
        self._leases = leases
        self._ledger = ledger
        self._opener = opener
        self._fetches = fetches
        self._lease_seconds = lease_seconds

    async def run(self, source: ProviderSource, *, force: bool = False) -> PollReport:
        """Poll ``source`` unless it was polled within its schedule (or another
        replica is polling it now: ``Busy``)."""
        done: dict[str, Any] = {}
        async with holding(self._leases, poll_lease(source.id), self._lease_seconds, done) as lease:
            due = older_than(lease.get("polledAt"), source.schedule_minutes * 60 - 30)
            if not (force or due):
                log.debug("poll.not_due", source=source.id, polled_at=lease.get("polledAt"))
                return PollReport(source.id, polled=False)
            async with connection_slot(self._leases, source, self._lease_seconds):
                listing = await list_source(self._opener, source)
            report = await self._apply(source, listing)
            done["polledAt"] = now_iso()
        log.info(
            "poll.done",
            source=source.id,
            listed=report.listed,
            fetches=len(report.fetches),
            deleted=len(report.deleted),
        )
        return report

    async def _apply(self, source: ProviderSource, listing: list[ObjectInfo]) -> PollReport:
        states = await known_states(self._ledger, source.id)
        decisions, gone = plan_poll(source, listing, states)
        report = PollReport(source.id, polled=True, listed=len(listing), decisions=decisions)
        requests = []
        for decision in decisions:
            state = states.get(decision.path)
            if decision.new_look:
                state = await self._ledger.note_look(source.id, decision.path, decision.look, state)
            if decision.verdict is Verdict.FETCH and state is not None:
                requests.append((state, decision))
        # Sent before they are noted: a crash in between only sends them again.
        await self._fetches.send_many(
            [
                FetchRequested(source_id=source.id, path=d.path, look=d.look, looked_at=s.looked_at)
                for s, d in requests
            ]
        )
        for state, decision in requests:
            await self._ledger.note_fetch_requested(state)
            report.fetches.append(decision.path)
        for state in gone:
            if await self._ledger.mark_deleted(state):
                log.info("file.source_deleted", source=source.id, file=state.path)
                report.deleted.append(state.path)
        return report
