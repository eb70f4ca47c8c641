"""The "job started" and "job finished" e-mails to a route's contacts (D8).

One of each per job, however often its event arrives: the notification's key
is ``<job id>#<event kind>`` in the idempotency record (see records.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
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


#: The notifier queue's ``maxReceiveCount`` (deploy/conveyor.yaml): a message
#: that fails on this receive goes to the dead-letter queue.
LAST_RECEIVE = 3


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
        list_limit: int = 200,
    ) -> None:
        self._routes = routes
        self._files = files
        self._jobs = jobs
        self._once = once
        self._mailer = mailer
        self._mail_from = mail_from
        self._index_retry = index_retry
        self._list_limit = list_limit

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
        sender = self._mail_from or routes.mail_from
        if isinstance(event, JobFinished):
            # SNS and SQS keep no order and a one-file job finishes within a
            # second: the start mail goes first, through its own once-only
            # record, so the job.started event that comes later finds it sent.
            await self._mail(_started_of(event), list(route.contacts), sender, message)
        await self._mail(event, list(route.contacts), sender, message)

    async def _mail(
        self, event: JobEvent, contacts: list[str], sender: str, message: ReceivedMessage
    ) -> None:
        notice = f"{event.job_id}#{event.kind}"
        last_receive = message.receive_count >= LAST_RECEIVE

        async def send(_: Sequence[int]) -> str:
            report = await self._report(event, last_receive)
            return await self._mailer.send(
                render_job_mail(report),
                sender=sender,
                recipients=contacts,
                notice=notice,
                headers=_headers(event),
            )

        pending = Pending(notice, message.message_id, message.receive_count)
        [failure] = await self._once.send([pending], send, f"{event.kind} mail")
        if failure is not None:
            raise failure

    async def _report(self, event: JobEvent, last_receive: bool) -> JobReport:
        job = await self._jobs.get(event.job_id)
        if job is None:
            log.warning("job.not_in_ledger", reason="the mail lists what the event says")
        total = _total(job, event)
        entries = await self._entries(event, total, last_receive)
        started = JobReport(
            kind="started",
            client_id=event.client_id,
            route_name=event.route_name,
            job_id=event.job_id,
            started_at=_parse_time(job.started_at if job else None, event.at),
            finished_at=None,
            total=total,
            files=tuple(FileLine.of(e) for e in entries),
            list_limit=self._list_limit,
        )
        if isinstance(event, JobStarted):
            return started
        return replace(
            started,
            kind="finished",
            finished_at=_parse_time(job.finished_at if job else None, event.at),
            succeeded=event.succeeded,
            failed=event.failed,
        )

    async def _entries(self, event: JobEvent, total: int, last_receive: bool) -> list[FileEntry]:
        """The job's entries once the ``byJob`` index shows them all (started)
        or all settled (finished); the index is eventually consistent."""

        async def complete() -> list[FileEntry]:
            entries = await self._files.files_of_job(event.job_id)
            behind = _index_behind(event, entries, total)
            if behind:
                raise IndexBehind(f"the byJob index {behind} of {event.job_id}")
            return entries

        try:
            return await self._index_retry.call(complete)
        except IndexBehind as exc:
            if not last_receive:
                raise
            # The next failure moves the event to the dead-letter queue: a mail
            # that lists what the ledger shows is better than none.
            log.warning("job.files_incomplete", reason=f"{exc}; mailed as the ledger shows it")
            return await self._files.files_of_job(event.job_id)


def _index_behind(event: JobEvent, entries: list[FileEntry], total: int) -> str | None:
    if isinstance(event, JobStarted) and len(entries) < total:
        return f"shows {len(entries)} of {total} files"
    if isinstance(event, JobFinished) and any(not entry.settled for entry in entries):
        return "still shows unsettled files"
    return None


def _started_of(event: JobFinished) -> JobStarted:
    """The job.started event a finished job had; the report reads its total
    and start time from the job ledger."""
    return JobStarted(
        job_id=event.job_id,
        client_id=event.client_id,
        route_name=event.route_name,
        files=event.succeeded + event.failed,
        at=event.at,
    )


def _total(job: Job | None, event: JobEvent) -> int:
    if job and job.total:
        return job.total
    return event.files if isinstance(event, JobStarted) else event.succeeded + event.failed


def _headers(event: JobEvent) -> dict[str, str]:
    """Headers a mail rule can filter on."""
    return {
        "X-Conveyor-Client": event.client_id,
        "X-Conveyor-Job": event.job_id,
        "X-Conveyor-Kind": event.kind,
    }
