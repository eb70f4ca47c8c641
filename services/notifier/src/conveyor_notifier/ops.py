"""What operators hear of: finally failed files, grouped per job, and dead
letters; by e-mail and/or Slack, as the routes file's ``ops`` section says.

Each channel keeps its own idempotency records, so a Slack outage does not
resend the e-mail when the messages come back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from conveyor_notifier.mail import Mailer
from conveyor_notifier.once import OnceSender, Pending
from conveyor_notifier.render import (
    render_dead_letter_alert,
    render_failure_alert,
    slack_dead_letters,
    slack_failures,
)
from conveyor_notifier.slack import SlackWebhooks
from conveyor_shared.config.loader import RoutesSource
from conveyor_shared.config.models import OpsNotifications, RoutesFile
from conveyor_shared.ledger.dynamo import now_iso
from conveyor_shared.messaging.batching import BatchWindow
from conveyor_shared.messaging.consumer import ReceivedMessage
from conveyor_shared.messaging.models import FileFailed

log = structlog.get_logger("conveyor.notifier")

Outcomes = list[Exception | None]


@dataclass(frozen=True)
class _Failure:
    event: FileFailed
    message: ReceivedMessage


def _digest(keys: Sequence[str]) -> str:
    return hashlib.sha256("|".join(sorted(keys)).encode()).hexdigest()[:16]


def _first_failure(per_channel: Sequence[Outcomes], count: int) -> Outcomes:
    """Per item: the first channel's failure, if any channel failed."""
    merged: Outcomes = [None] * count
    for outcomes in per_channel:
        merged = [m if m is not None else o for m, o in zip(merged, outcomes, strict=True)]
    return merged


class OpsAlerts:
    def __init__(
        self,
        *,
        routes: RoutesSource,
        once: OnceSender,
        mailer: Mailer,
        slack: SlackWebhooks,
        mail_from: str | None,
        batch_seconds: float,
        batch_max: int,
    ) -> None:
        self._routes = routes
        self._once = once
        self._mailer = mailer
        self._slack = slack
        self._mail_from = mail_from
        self._window: BatchWindow[_Failure] = BatchWindow(
            self._flush_failures,
            quiet_seconds=batch_seconds,
            max_wait_seconds=batch_seconds,
            max_items=batch_max,
        )

    async def file_failed(self, event: FileFailed, message: ReceivedMessage) -> None:
        """Report a finally failed file, with the others of its job that fail meanwhile."""
        await self._window.add(event.job_id, _Failure(event, message))

    async def _flush_failures(self, job_id: str, items: list[_Failure]) -> Outcomes:
        routes = await self._routes.get()
        ops = routes.ops
        client_id = items[0].event.client_id
        log.error(
            "ops.files_failed",
            client_id=client_id,
            job_id=job_id,
            files=[i.event.file_name for i in items],
        )
        if not ops.emails and ops.slack is None:
            log.info("ops.not_configured", reason="the routes file has no ops e-mails or Slack")
            return [None] * len(items)
        per_channel: list[Outcomes] = []
        if ops.emails:
            per_channel.append(await self._mail_failures(routes, ops, job_id, client_id, items))
        if ops.slack is not None:
            per_channel.append(await self._slack_failures(ops, job_id, client_id, items))
        return _first_failure(per_channel, len(items))

    def _pending(self, items: Sequence[_Failure], channel: str) -> list[Pending]:
        return [
            Pending(
                f"{i.event.job_id}#file.failed#{i.event.content_id}#{channel}",
                i.message.message_id,
                i.message.receive_count,
            )
            for i in items
        ]

    async def _mail_failures(
        self,
        routes: RoutesFile,
        ops: OpsNotifications,
        job_id: str,
        client_id: str,
        items: list[_Failure],
    ) -> Outcomes:
        pending = self._pending(items, "mail")

        async def send(indices: Sequence[int]) -> str:
            return await self._mailer.send(
                render_failure_alert(client_id, job_id, [items[i].event for i in indices]),
                sender=self._mail_from or routes.mail_from,
                recipients=list(ops.emails),
                notice=f"{job_id}#file.failed#{_digest([pending[i].key for i in indices])}",
                headers={
                    "X-Conveyor-Client": client_id,
                    "X-Conveyor-Job": job_id,
                    "X-Conveyor-Kind": "ops.file.failed",
                },
            )

        return await self._once.send(pending, send, "ops failure mail")

    async def _slack_failures(
        self, ops: OpsNotifications, job_id: str, client_id: str, items: list[_Failure]
    ) -> Outcomes:
        assert ops.slack is not None
        webhook = ops.slack

        async def send(indices: Sequence[int]) -> None:
            failures = [items[i].event for i in indices]
            await self._slack.post(webhook, slack_failures(client_id, job_id, failures), "ops")

        return await self._once.send(self._pending(items, "slack"), send, "ops failure Slack")

    async def dead_letters(self, queue: str, count: int, previous: int) -> bool:
        """Tell operators ``count`` dead letters wait in ``queue``; False if no
        configured channel could be reached (the caller tries again later)."""
        log.error("ops.dead_letters", queue=queue, count=count, previous=previous)
        routes = await self._routes.get()
        ops = routes.ops
        delivered = not ops.emails and ops.slack is None
        if ops.emails:
            try:
                await self._mailer.send(
                    render_dead_letter_alert(queue, count, previous),
                    sender=self._mail_from or routes.mail_from,
                    recipients=list(ops.emails),
                    notice=f"dead-letters#{queue}#{count}#{now_iso()}",
                    headers={"X-Conveyor-Kind": "ops.dead_letters", "X-Conveyor-Queue": queue},
                )
                delivered = True
            except Exception as exc:
                log.error("ops.dead_letter_mail_failed", queue=queue, error=str(exc))
        if ops.slack is not None:
            try:
                await self._slack.post(ops.slack, slack_dead_letters(queue, count, previous), "ops")
                delivered = True
            except Exception as exc:
                log.error("ops.dead_letter_slack_failed", queue=queue, error=str(exc))
        return delivered
