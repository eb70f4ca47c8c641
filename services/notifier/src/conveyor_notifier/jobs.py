"""The "job started" and "job finished" e-mails to a route's contacts (D8).

One of each per job, however often its event arrives: the notification's key
is ``<job id>#<event kind>`` in the idempotency record (see records.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import structlog

from conveyor_notifier.mail import Mailer
from conveyor_notifier.once import OnceSender, Pending
from conveyor_notifier.render import FileLine, JobReport, render_job_mail
from conveyor_notifier.retries import RetryPolicy
from conveyor_shared.config.loader import RoutesSource
from conveyor_shared.errors import TransientError
from conveyor_shared.ledger.dynamo import parse_iso
from conveyor_shared.ledger.files import FileLedger
from conveyor_shared.ledger.jobs import JobLedger
from conveyor_shared.ledger.models import FileEntry, Job
from conveyor_shared.messaging.consumer import ReceivedMessage
from conveyor_shared.messaging.models import JobFinished, JobStarted

log = structlog.get_logger("conveyor.notifier")

JobEvent = JobStarted | JobFinished


class IndexBehind(TransientError):
    """The ``byJob`` index (eventually consistent) has not caught up yet."""


def _parse_time(iso: str | None, fallback: datetime) -> datetime:
    return parse_iso(iso) if iso else fallback


class JobMails:
    def __init__(
        self,
        *,
        routes: RoutesSource,
        files: FileLedger,
        jobs: JobLedger,
        once: OnceSender,
        mailer: Mailer,
        mail_from: str | None,
        index_retry: RetryPolicy,
    ) -> None:
        self._routes = routes
        self._files = files
        self._jobs = jobs
        self._once = once
        self._mailer = mailer
        self._mail_from = mail_from
        self._index_retry = index_retry

    async def notify(self, event: JobEvent, message: ReceivedMessage) -> None:
        """Mail ``event`` to its route's contacts unless that was done already.

        A client without a route (removed from the routes file) or with
        notifications off gets nothing; that is logged, not an error.
        """
        routes = await self._routes.get()
        route = routes.route_for_client(event.client_id)
        if route is None:
            log.warning(
                "notify.route_missing",
                route=event.route_name,
                event_kind=event.kind,
                reason="the client has no route in the routes file; no mail sent",
            )
            return
        if not route.notify:
            log.info("notify.off", event_kind=event.kind, route=route.name)
            return
        notice = f"{event.job_id}#{event.kind}"
        sender = self._mail_from or routes.mail_from

        async def send(_: Sequence[int]) -> str:
            report = await self._report(event)
            return await self._mailer.send(
                render_job_mail(report),
                sender=sender,
                recipients=list(route.contacts),
                notice=notice,
                headers=_headers(event),
            )

        pending = Pending(notice, message.message_id, message.receive_count)
        [failure] = await self._once.send([pending], send, f"{event.kind} mail")
        if failure is not None:
            raise failure

    async def _report(self, event: JobEvent) -> JobReport:
        job = await self._jobs.get(event.job_id)
        if job is None:
            log.warning("job.not_in_ledger", reason="the mail lists what the event says")
        files = tuple(FileLine.of(e) for e in await self._entries(event))
        started_at = _parse_time(job.started_at if job else None, event.at)
        if isinstance(event, JobStarted):
            return JobReport(
                kind="started",
                client_id=event.client_id,
                route_name=event.route_name,
                job_id=event.job_id,
                started_at=started_at,
                finished_at=None,
                total=job.total if job and job.total else event.files,
                files=files,
            )
        return JobReport(
            kind="finished",
            client_id=event.client_id,
            route_name=event.route_name,
            job_id=event.job_id,
            started_at=started_at,
            finished_at=_parse_time(job.finished_at if job else None, event.at),
            total=_total(job, event),
            succeeded=event.succeeded,
            failed=event.failed,
            files=files,
        )

    async def _entries(self, event: JobEvent) -> list[FileEntry]:
        if isinstance(event, JobStarted):
            return await self._files.files_of_job(event.job_id)

        async def settled() -> list[FileEntry]:
            entries = await self._files.files_of_job(event.job_id)
            if any(not entry.settled for entry in entries):
                raise IndexBehind(f"the byJob index still shows unsettled files of {event.job_id}")
            return entries

        return await self._index_retry.call(settled)


def _total(job: Job | None, event: JobFinished) -> int:
    return job.total if job and job.total else event.succeeded + event.failed


def _headers(event: JobEvent) -> dict[str, str]:
    """Headers a mail rule can filter on."""
    return {
        "X-Conveyor-Client": event.client_id,
        "X-Conveyor-Job": event.job_id,
        "X-Conveyor-Kind": event.kind,
    }
