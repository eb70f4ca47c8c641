"""What the notifier does with each event on its queue (A3).

``job.started`` / ``job.finished``: the client's e-mails. ``file.failed``: an
ops alert. ``file.received`` for the care team: a Slack message. Anything
else is malformed for the notifier: the consumer logs it and it goes to the
dead-letter queue.
"""

from __future__ import annotations

import structlog

from conveyor_notifier.care_team import CareTeamSlack
from conveyor_notifier.jobs import JobMails
from conveyor_notifier.ops import OpsAlerts
from conveyor_shared.messaging.consumer import ReceivedMessage
from conveyor_shared.messaging.envelopes import MalformedMessage, parse_body
from conveyor_shared.messaging.models import FileFailed, FileReceived, JobFinished, JobStarted


class NotifierHandler:
    def __init__(self, jobs: JobMails, ops: OpsAlerts, care_team: CareTeamSlack) -> None:
        self._jobs = jobs
        self._ops = ops
        self._care_team = care_team

    async def handle(self, message: ReceivedMessage) -> None:
        event = parse_body(message.body)
        bind = structlog.contextvars.bind_contextvars
        if isinstance(event, JobStarted | JobFinished):
            bind(client_id=event.client_id, job_id=event.job_id, event_kind=event.kind)
            await self._jobs.notify(event, message)
        elif isinstance(event, FileFailed):
            bind(client_id=event.client_id, job_id=event.job_id, file=event.file_name)
            await self._ops.file_failed(event, message)
        elif isinstance(event, FileReceived):
            bind(client_id=event.partner_id, source=event.source, file=event.file_name)
            await self._care_team.file_received(event, message)
        else:
            raise MalformedMessage(f"the notifier does not handle {type(event).__name__} messages")
