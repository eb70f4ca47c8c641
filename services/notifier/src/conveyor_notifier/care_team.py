"""Slack messages for the care team (S6): provider files meant for them, one
message per burst of a source's files rather than one per file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from conveyor_notifier.once import OnceSender, Pending
from conveyor_notifier.render import slack_care_team_files
from conveyor_notifier.slack import SlackWebhooks
from conveyor_shared.config.loader import RoutesSource
from conveyor_shared.messaging.batching import BatchWindow
from conveyor_shared.messaging.consumer import ReceivedMessage
from conveyor_shared.messaging.models import FileReceived

log = structlog.get_logger("conveyor.notifier")


@dataclass(frozen=True)
class _Received:
    event: FileReceived
    message: ReceivedMessage

    @property
    def key(self) -> str:
        # The same event redelivered has the same source, URI and time.
        e = self.event
        return f"file.received#{e.source}#{e.s3_uri}#{e.at.isoformat()}#slack"


class CareTeamSlack:
    def __init__(
        self,
        *,
        routes: RoutesSource,
        once: OnceSender,
        slack: SlackWebhooks,
        batch_seconds: float,
        batch_max: int,
    ) -> None:
        self._routes = routes
        self._once = once
        self._slack = slack
        self._window: BatchWindow[_Received] = BatchWindow(
            self._flush,
            quiet_seconds=batch_seconds,
            max_wait_seconds=batch_seconds,
            max_items=batch_max,
        )

    async def file_received(self, event: FileReceived, message: ReceivedMessage) -> None:
        if event.audience != "care_team":
            log.debug("file_received.for_process", reason="an automated process takes it")
            return
        await self._window.add(f"{event.partner_id}#{event.source}", _Received(event, message))

    async def _flush(self, group: str, items: list[_Received]) -> list[Exception | None]:
        source = items[0].event.source
        webhook = (await self._routes.get()).care_team.slack
        if webhook is None:
            log.warning(
                "care_team.slack_not_configured",
                source=source,
                files=[i.event.file_name for i in items],
                reason="the routes file has no care_team.slack; nobody was told",
            )
            return [None] * len(items)

        async def send(indices: Sequence[int]) -> None:
            files = [items[i].event for i in indices]
            await self._slack.post(webhook, slack_care_team_files(source, files), "care_team")

        pending = [Pending(i.key, i.message.message_id, i.message.receive_count) for i in items]
        return await self._once.send(pending, send, "care team Slack")
