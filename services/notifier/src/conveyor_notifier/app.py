"""Wiring of the notifier service."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import httpx
import structlog

from conveyor_notifier.care_team import CareTeamSlack
from conveyor_notifier.deadletters import DeadLetterWatch
from conveyor_notifier.handlers import NotifierHandler
from conveyor_notifier.jobs import JobMails
from conveyor_notifier.mail import Mailer
from conveyor_notifier.once import OnceSender
from conveyor_notifier.ops import OpsAlerts
from conveyor_notifier.records import NotificationRecords
from conveyor_notifier.retries import RetryPolicy
from conveyor_notifier.settings import NotifierSettings
from conveyor_notifier.slack import SlackWebhooks
from conveyor_notifier.transports import MailTransport, SesTransport, SmtpTransport
from conveyor_shared.aws import CLIENT_CONFIG, aws_session
from conveyor_shared.config.loader import RoutesSource
from conveyor_shared.ledger.files import FileLedger
from conveyor_shared.ledger.jobs import JobLedger
from conveyor_shared.messaging.consumer import QueueConsumer
from conveyor_shared.runtime import open_clients, run_consumers, stop_event_on_signals
from conveyor_shared.secrets import SecretStore

log = structlog.get_logger("conveyor.notifier")

#: The ``byJob`` index lags its table by well under a second.
INDEX_RETRY = RetryPolicy(attempts=6, seconds=15.0, wait_initial=0.2, wait_max=3.0)


async def open_transport(
    settings: NotifierSettings, stack: AsyncExitStack, secrets: SecretStore
) -> MailTransport:
    if settings.transport == "ses":
        session = aws_session(settings.region)
        ses = await stack.enter_async_context(session.client("sesv2", config=CLIENT_CONFIG))
        return SesTransport(ses, settings.ses_configuration_set)
    return SmtpTransport(
        host=settings.smtp_host,
        port=settings.smtp_port,
        starttls=settings.smtp_starttls,
        secrets=secrets,
        username=settings.smtp_username,
        password_secret=settings.smtp_password_secret,
        ca_file=settings.smtp_ca_file,
        timeout=settings.smtp_timeout,
    )


async def run(settings: NotifierSettings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (by default: until SIGTERM or SIGINT)."""
    structlog.contextvars.bind_contextvars(service="notifier")
    names = settings.names
    async with AsyncExitStack() as stack:
        aws = await open_clients(stack, settings)
        secrets = SecretStore(aws.secrets)
        http = await stack.enter_async_context(
            httpx.AsyncClient(timeout=settings.slack_timeout, follow_redirects=False)
        )
        send_retry = RetryPolicy(settings.send_attempts, settings.send_retry_seconds)
        mailer = Mailer(await open_transport(settings, stack, secrets), send_retry)
        slack = SlackWebhooks(http, secrets, send_retry, settings.slack_max_retry_after)
        records = NotificationRecords(
            aws.dynamodb,
            names.notifications_table,
            settings.claim_lease_seconds,
            settings.record_retention_days,
        )
        once = OnceSender(records, settings.held_retry_seconds)
        routes = RoutesSource(settings.routes_uri, aws.s3)
        await routes.get()  # refuse to start on an invalid routes file
        mail_from = str(settings.mail_from) if settings.mail_from else None
        ops = OpsAlerts(
            routes=routes,
            once=once,
            mailer=mailer,
            slack=slack,
            mail_from=mail_from,
            batch_seconds=settings.ops_batch_seconds,
            batch_max=settings.batch_max_items,
        )
        handler = NotifierHandler(
            JobMails(
                routes=routes,
                files=FileLedger(aws.dynamodb, names.files_table),
                jobs=JobLedger(aws.dynamodb, names.jobs_table),
                once=once,
                mailer=mailer,
                mail_from=mail_from,
                index_retry=INDEX_RETRY,
                list_limit=settings.mail_list_limit,
            ),
            ops,
            CareTeamSlack(
                routes=routes,
                once=once,
                slack=slack,
                batch_seconds=settings.slack_batch_seconds,
                batch_max=settings.batch_max_items,
            ),
        )
        consumer = QueueConsumer(
            aws.sqs,
            await aws.queue_url(names.notifier_queue),
            handler.handle,
            concurrency=settings.concurrency,
            visibility_timeout=settings.visibility_timeout,
            wait_seconds=settings.receive_wait_seconds,
        )
        watch = DeadLetterWatch(
            aws.sqs,
            settings.watched_dead_letter_queues,
            records,
            ops,
            settings.dead_letter_poll_seconds,
        )
        log.info("service.started", queue=names.notifier_queue, transport=mailer.transport)
        stop = stop or stop_event_on_signals()
        await asyncio.gather(run_consumers([consumer], stop), watch.run(stop))
