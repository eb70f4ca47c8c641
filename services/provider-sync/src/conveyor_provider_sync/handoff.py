"""Telling whoever a received file is for (S6): ``file.received`` on the
events topic. An automated ``process`` subscribes to it; for the
``care_team`` the notifier turns a poll's files into one Slack message."""

from __future__ import annotations

import structlog

from conveyor_provider_sync.landing import version_id
from conveyor_shared.config.sources import ProviderSource
from conveyor_shared.ledger.dynamo import parse_iso
from conveyor_shared.ledger.received import ReceivedLedger, ReceivedVersion
from conveyor_shared.messaging.models import FileReceived
from conveyor_shared.messaging.publisher import EventPublisher

log = structlog.get_logger("conveyor.provider_sync")


def received_event(source: ProviderSource, version: ReceivedVersion) -> FileReceived:
    # ``at`` is the version's stored time, so a publish repeated after a crash
    # is the same event and the notifier tells the care team once.
    return FileReceived(
        source=source.id,
        partner_id=source.partner_id,
        file_name=version.path.rsplit("/", 1)[-1],
        s3_uri=version.uri,
        size=version.size,
        sha256=version.sha256,
        version=version_id(version.first_seen, version.sha256),
        audience=source.audience,
        at=parse_iso(version.stored_at),
    )


class HandOff:
    def __init__(self, publisher: EventPublisher, ledger: ReceivedLedger) -> None:
        self._publisher = publisher
        self._ledger = ledger

    async def deliver(self, source: ProviderSource, version: ReceivedVersion) -> None:
        """Publish once per version: published, then noted; a crash in
        between publishes the same event again."""
        if version.handed_off_at is not None:
            return
        await self._publisher.publish(received_event(source, version))
        await self._ledger.note_handed_off(version)
        log.info("file.handed_off", source=source.id, file=version.path, audience=source.audience)
