"""The notifier against real peers: aiosmtpd (plain, and STARTTLS with AUTH),
SES v2 in moto, a local HTTP endpoint standing in for Slack, and the stack's
own SNS topic, SQS queues and DynamoDB tables.

Events are published on the stack's topic the way the scanner and the
transfer services publish them; jobs and files are real ledger entries moved
through their states by the ledger's own methods.
"""

from __future__ import annotations

import csv
import email
import email.policy
import io
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aioboto3
import httpx
import pytest
import stamina
from aiohttp import web

from conveyor_cli.localstack import servers
from conveyor_cli.localstack.processes import free_port
from conveyor_notifier.app import run
from conveyor_notifier.records import ClaimState, NotificationRecords
from conveyor_notifier.settings import NotifierSettings
from conveyor_shared.delivery.failures import fail_file
from conveyor_shared.delivery.jobs import JobCompletion
from conveyor_shared.ledger.dynamo import now_iso, to_item
from conveyor_shared.ledger.files import FileLedger
from conveyor_shared.ledger.jobs import JobLedger
from conveyor_shared.ledger.models import FileEntry, FileStatus, Job, JobStatus
from conveyor_shared.messaging.models import FileFailed, FileReceived, JobFinished, JobStarted
from conveyor_shared.messaging.publisher import EventPublisher
from tests.support import (
    InProcessServices,
    Stack,
    eventually,
    json_lines,
    service_process,
    write_routes,
)

MAIL_FROM = "conveyor@delivery.example"
OPS = "ops@conveyor.example"


# --- the ledger and the events, as the other services write them ---------------------------


@dataclass
class Ledger:
    files: FileLedger
    jobs: JobLedger
    publisher: EventPublisher
    completion: JobCompletion
    pickup: str

    @classmethod
    def of(cls, stack: Stack, aws: dict[str, Any]) -> Ledger:
        files = FileLedger(aws["dynamodb"], f"{stack.name}-files")
        jobs = JobLedger(aws["dynamodb"], f"{stack.name}-jobs")
        publisher = EventPublisher(aws["sns"], stack.outputs["EventsTopicArn"])
        return cls(
            files, jobs, publisher, JobCompletion(files, jobs, publisher), stack.pickup_bucket
        )

    async def new_job(
        self, client_id: str, count: int, unrecorded: int = 0
    ) -> tuple[Job, list[FileEntry]]:
        """A running job of ``count`` recorded files, as the scanner leaves it;
        the last ``unrecorded`` are returned but not written (yet)."""
        job = Job(
            job_id=f"{client_id}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}",
            client_id=client_id,
            route_name=f"Client {client_id}",
            status=JobStatus.FORMING,
            started_at=now_iso(),
        )
        assert await self.jobs.create(job)
        entries = [self._entry(job, i) for i in range(count)]
        for entry in entries[: count - unrecorded]:
            assert await self.files.record_new(entry)
        started = await self.jobs.start(job.job_id, count)
        assert started is not None
        return started, entries

    def _entry(self, job: Job, index: int) -> FileEntry:
        name = f"claims-{index:02d}.csv"
        key = f"{job.client_id}/{name}"
        return FileEntry(
            client_id=job.client_id,
            content_id=f"{job.job_id}-etag-{index:02d}",
            timestamp=now_iso(),
            status=FileStatus.PROCESSING,
            file_path=f"s3://{self.pickup}/{key}",
            file_name=name,
            job_id=job.job_id,
            route_name=job.route_name,
            size=1000 * (index + 1),
            source_bucket=self.pickup,
            source_key=key,
            active_since=now_iso(),
        )

    async def announce(self, job: Job) -> JobStarted:
        event = JobStarted(
            job_id=job.job_id, client_id=job.client_id, route_name=job.route_name, files=job.total
        )
        await self.publisher.publish(event)
        return event

    async def transfer(self, entry: FileEntry, attempts: int = 1, succeed: bool = True) -> None:
        """What a transfer service does: each attempt claims the file (counting
        it); failed attempts are recorded; the last one settles the file."""
        error = "SFTP server sftp.client.example:22 closed the connection"
        claimed: FileEntry | None = None
        settled: FileEntry | None = None
        for attempt in range(1, attempts + 1):
            owner = f"transfer-{entry.content_id}-{attempt}"
            claimed = await self.files.claim(
                entry.client_id, entry.content_id, entry.job_id, owner, 300
            )
            assert claimed is not None
            if attempt < attempts or not succeed:
                await self.files.record_attempt_failure(
                    entry.client_id, entry.content_id, owner, error, "transient"
                )
            else:
                settled = await self.files.settle(
                    claimed, FileStatus.SUCCESS, owner=owner, delivered_to="s3://dest/"
                )
        assert claimed is not None
        if succeed:
            assert settled is not None
            await self.completion.count(settled)
        else:  # what the dead-letter handler does after the third failed receive
            reason = f"failed {attempts} attempts; last error: {error}"
            await fail_file(
                self.files, self.publisher, self.completion, claimed, reason, "transient"
            )


# --- configuration and running the notifier -------------------------------------------------


def route(stack: Stack, client_id: str, contacts: list[str], notify: bool = True) -> dict[str, Any]:
    return {
        "name": f"Client {client_id}",
        "client_id": client_id,
        "contacts": contacts,
        "notify": notify,
        "pickup": f"s3://{stack.pickup_bucket}/{client_id}/",
        "destination": {"type": "s3", "bucket": f"{stack.name}-dest"},
    }


def settings(stack: Stack, routes: Path, **overrides: Any) -> NotifierSettings:
    values: dict[str, Any] = {
        "stack": stack.name,
        "routes_uri": str(routes),
        "environment": "test",
        "receive_wait_seconds": 1,
        "visibility_timeout": 5,
        "dead_letter_poll_seconds": 0,
        "held_retry_seconds": 1,
        **overrides,
    }
    return NotifierSettings(**values)


def smtp_settings(server: servers.SmtpServer) -> dict[str, Any]:
    return {
        "transport": "smtp",
        "smtp_host": "127.0.0.1",
        "smtp_port": server.port,
        "smtp_starttls": False,
    }


def process_env(stack: Stack, routes: Path, smtp_port: int, **extra: str) -> dict[str, str]:
    defaults = {
        "CONVEYOR_NOTIFIER_TRANSPORT": "smtp",
        "CONVEYOR_SMTP_HOST": "127.0.0.1",
        "CONVEYOR_SMTP_PORT": str(smtp_port),
        "CONVEYOR_SMTP_STARTTLS": "false",
        "CONVEYOR_VISIBILITY_TIMEOUT": "5",
        "CONVEYOR_DEAD_LETTER_POLL_SECONDS": "0",
        "CONVEYOR_HELD_RETRY_SECONDS": "1",
    }
    return stack.service_env(routes, **(defaults | extra))


# --- reading what arrived --------------------------------------------------------------------


def received(server: servers.SmtpServer, **headers: str) -> list[EmailMessage]:
    """Mails in the server's Maildir whose headers (``X_Conveyor_Job=...``) match."""
    wanted = {name.replace("_", "-"): value for name, value in headers.items()}
    mails = []
    for raw in server.messages():
        mail = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(mail, EmailMessage)
        if all(mail.get(name) == value for name, value in wanted.items()):
            mails.append(mail)
    return mails


def text_of(mail: EmailMessage) -> str:
    body = mail.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def html_of(mail: EmailMessage) -> str:
    body = mail.get_body(("html",))
    assert body is not None
    return str(body.get_content())


def listed_files(text: str) -> dict[str, tuple[str, int]]:
    """The file table of a plain-text mail: name -> (status, attempts)."""
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0].startswith("claims-"):
            rows[parts[0]] = (parts[3], int(parts[4]))
    return rows


async def idle(sqs: Any, queue_url: str) -> bool:
    """Nothing waiting, in flight or delayed: every event was handled and deleted."""
    response = await sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )
    return all(value == "0" for value in response["Attributes"].values())


async def dlq_has_messages(aws: dict[str, Any], stack: Stack) -> bool:
    response = await aws["sqs"].get_queue_url(QueueName=f"{stack.name}-notifier-dlq")
    return not await idle(aws["sqs"], str(response["QueueUrl"]))


# --- D8: one start and one finish mail, whatever happens ------------------------------------


async def test_fifty_file_job_gets_one_start_and_one_finish_mail_across_a_restart(
    stack: Stack,
    aws: dict[str, Any],
    smtp: servers.SmtpServer,
    tmp_path: Path,
) -> None:
    contacts = ["care@client.example", "it@client.example"]
    routes = write_routes(
        tmp_path / "routes.yaml",
        [route(stack, "H3001", contacts)],
        mail_from=MAIL_FROM,
        ops={"emails": [OPS]},
    )
    env = process_env(stack, routes, smtp.port, CONVEYOR_OPS_BATCH_SECONDS="0.5")
    ledger = Ledger.of(stack, aws)
    job, entries = await ledger.new_job("H3001", 50)
    first = service_process("conveyor_notifier", tmp_path / "notifier-1.log", env)
    second = None
    try:
        started = await ledger.announce(job)

        async def start_mail_sent() -> bool:
            record = await NotificationRecords(
                aws["dynamodb"], f"{stack.name}-notifications", 900
            ).get(f"{job.job_id}#job.started")
            return record is not None and record["state"] == "sent"

        await eventually(start_mail_sent, timeout=60, what="the start mail")
        # An SNS duplicate of job.started, then the notifier dies (no clean shutdown).
        await ledger.publisher.publish(started)
        first.kill()

        # While it is down, the job runs: three files need retries, one finally fails.
        retried = {7: (2, True), 13: (3, True), 42: (3, False)}
        for index, entry in enumerate(entries):
            attempts, succeed = retried.get(index, (1, True))
            await ledger.transfer(entry, attempts, succeed)
        finished = JobFinished(
            job_id=job.job_id,
            client_id="H3001",
            route_name=job.route_name,
            succeeded=49,
            failed=1,
        )
        await ledger.publisher.publish(finished)  # a republished job.finished ...
        await ledger.publisher.publish(finished)  # ... delivered twice
        await ledger.publisher.publish(started)  # and job.started once more

        second = service_process("conveyor_notifier", tmp_path / "notifier-2.log", env)

        async def all_handled() -> bool:
            mails = received(smtp, X_Conveyor_Job=job.job_id)
            return len(mails) >= 3 and await idle(aws["sqs"], stack.outputs["NotifierQueueUrl"])

        await eventually(all_handled, timeout=90, what="finish and ops mails, queue drained")
    finally:
        first.stop()
        if second is not None:
            second.stop()

    starts = received(smtp, X_Conveyor_Job=job.job_id, X_Conveyor_Kind="job.started")
    finishes = received(smtp, X_Conveyor_Job=job.job_id, X_Conveyor_Kind="job.finished")
    ops = received(smtp, X_Conveyor_Job=job.job_id, X_Conveyor_Kind="ops.file.failed")
    assert (len(starts), len(finishes), len(ops)) == (1, 1, 1)

    start, finish = starts[0], finishes[0]
    for mail in (start, finish):
        assert mail["From"] == MAIL_FROM
        assert mail["To"] == ", ".join(contacts)
        assert mail["X-RcptTo"] == ", ".join(contacts)  # the SMTP envelope, set by aiosmtpd
    assert start["Subject"] == f"Conveyor H3001 | {job.job_id} | started: 50 files"
    assert listed_files(text_of(start)) == {
        f"claims-{i:02d}.csv": ("processing", 0) for i in range(50)
    }

    assert finish["Subject"] == (
        f"Conveyor H3001 | {job.job_id} | finished with failures: 49 delivered, 1 failed"
    )
    expected = {f"claims-{i:02d}.csv": ("success", 1) for i in range(50)}
    expected |= {
        "claims-07.csv": ("success", 2),
        "claims-13.csv": ("success", 3),
        "claims-42.csv": ("fail", 3),
    }
    text = text_of(finish)
    assert listed_files(text) == expected
    assert "Files:     50 (49 delivered, 1 failed)" in text
    assert (
        "  - claims-42.csv (3 attempts): failed 3 attempts; last error: "
        "SFTP server sftp.client.example:22 closed the connection"
    ) in text
    assert all(f"claims-{i:02d}.csv" in html_of(finish) for i in range(50))

    assert ops[0]["To"] == OPS
    assert ops[0]["Subject"] == f"Conveyor ops | H3001 | {job.job_id} | 1 file failed"
    assert "claims-42.csv (3 attempts" in text_of(ops[0])

    skipped = [
        e
        for e in json_lines(tmp_path / "notifier-2.log")
        if e.get("event") == "notice.already_sent"
    ]
    assert {e["notice"] for e in skipped} >= {f"{job.job_id}#job.started"}
    assert not await dlq_has_messages(aws, stack)


async def test_start_mail_lists_files_the_index_shows_only_after_the_event(
    stack: Stack, aws: dict[str, Any], smtp: servers.SmtpServer, tmp_path: Path
) -> None:
    """The ``byJob`` index may lag the event: the start mail waits for every file."""
    routes = write_routes(
        tmp_path / "routes.yaml", [route(stack, "H3011", ["c@client.example"])], mail_from=MAIL_FROM
    )
    ledger = Ledger.of(stack, aws)
    job, entries = await ledger.new_job("H3011", 8, unrecorded=3)
    records = NotificationRecords(aws["dynamodb"], f"{stack.name}-notifications", 900)
    notifier = service_process(
        "conveyor_notifier", tmp_path / "notifier.log", process_env(stack, routes, smtp.port)
    )
    try:
        await ledger.announce(job)

        async def start_claimed() -> bool:
            return await records.get(f"{job.job_id}#job.started") is not None

        await eventually(start_claimed, timeout=30, what="the start notification claimed")
        for entry in entries[5:]:  # the index catches up
            assert await ledger.files.record_new(entry)

        async def start_mailed() -> list[EmailMessage]:
            return received(smtp, X_Conveyor_Job=job.job_id, X_Conveyor_Kind="job.started")

        [start] = await eventually(start_mailed, timeout=60, what="the start mail")
    finally:
        notifier.stop()
    assert start["Subject"] == f"Conveyor H3011 | {job.job_id} | started: 8 files"
    assert listed_files(text_of(start)) == {
        f"claims-{i:02d}.csv": ("processing", 0) for i in range(8)
    }


async def test_finish_event_before_its_start_event_mails_start_then_finish(
    stack: Stack,
    aws: dict[str, Any],
    smtp: servers.SmtpServer,
    services: InProcessServices,
    tmp_path: Path,
) -> None:
    routes = write_routes(
        tmp_path / "routes.yaml", [route(stack, "H3021", ["c@client.example"])], mail_from=MAIL_FROM
    )
    ledger = Ledger.of(stack, aws)
    job, entries = await ledger.new_job("H3021", 2)
    services.start(run, settings(stack, routes, **smtp_settings(smtp)))
    for entry in entries:
        await ledger.transfer(entry)  # the last one publishes job.finished

    async def finish_mailed() -> list[EmailMessage]:
        return received(smtp, X_Conveyor_Job=job.job_id, X_Conveyor_Kind="job.finished")

    await eventually(finish_mailed, timeout=30, what="the finish mail")
    await ledger.announce(job)  # job.started arrives last

    async def drained() -> bool:
        return await idle(aws["sqs"], stack.outputs["NotifierQueueUrl"])

    await eventually(drained, timeout=30, what="the late job.started handled")
    mails = received(smtp, X_Conveyor_Job=job.job_id)
    assert [m["X-Conveyor-Kind"] for m in mails] == ["job.started", "job.finished"]
    assert str(mails[0]["Subject"]) == f"Conveyor H3021 | {job.job_id} | started: 2 files"
    assert not await dlq_has_messages(aws, stack)


async def write_finished_job(ledger: Ledger, aws: dict[str, Any], count: int) -> Job:
    """A finished job of ``count`` settled files, written in batches (a scanner
    and transfers would take minutes on moto): every 100th failed."""
    now = now_iso()
    job = Job(
        job_id=f"H3031-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}",
        client_id="H3031",
        route_name="Client H3031",
        status=JobStatus.FINISHED,
        started_at=now,
        finished_at=now,
        total=count,
        succeeded=count - count // 100,
        failed=count // 100,
    )
    assert await ledger.jobs.create(job)
    entries = []
    for i in range(count):
        entry = ledger._entry(job, i)
        failed = i % 100 == 99
        entries.append(
            entry.model_copy(
                update={
                    "status": FileStatus.FAIL if failed else FileStatus.SUCCESS,
                    "active": False,
                    "active_since": None,
                    "send_attempts": 3 if failed else 1,
                    "last_error": "GCS answered 403" if failed else None,
                    "delivered_to": None if failed else f"gs://h3031-in/{entry.file_name}",
                    "delivered_at": None if failed else now,
                    "verified_by": None if failed else "md5:destination",
                }
            )
        )
    for start in range(0, count, 25):
        batch = entries[start : start + 25]
        requests = [{"PutRequest": {"Item": to_item(e.to_attributes())}} for e in batch]
        response = await aws["dynamodb"].batch_write_item(
            RequestItems={ledger.files.table: requests}
        )
        assert not response.get("UnprocessedItems")
    return job


def attached_csv(mail: EmailMessage) -> list[dict[str, str]]:
    [part] = [p for p in mail.iter_attachments() if p.get_content_type() == "text/csv"]
    content = part.get_content()
    text = content.decode() if isinstance(content, bytes) else str(content)
    return list(csv.DictReader(io.StringIO(text)))


async def test_a_job_of_many_files_gets_a_bounded_mail_with_every_file_as_csv(
    stack: Stack,
    aws: dict[str, Any],
    smtp: servers.SmtpServer,
    services: InProcessServices,
    tmp_path: Path,
) -> None:
    # 10,000 files pass too (about 40 s on moto, most of it reading the index twice).
    count = 2000
    routes = write_routes(
        tmp_path / "routes.yaml", [route(stack, "H3031", ["c@client.example"])], mail_from=MAIL_FROM
    )
    ledger = Ledger.of(stack, aws)
    job = await write_finished_job(ledger, aws, count)
    services.start(run, settings(stack, routes, mail_list_limit=200, **smtp_settings(smtp)))
    await ledger.publisher.publish(
        JobFinished(
            job_id=job.job_id,
            client_id=job.client_id,
            route_name=job.route_name,
            succeeded=job.succeeded,
            failed=job.failed,
        )
    )

    async def both_mailed() -> list[EmailMessage] | None:
        mails = received(smtp, X_Conveyor_Job=job.job_id)
        return mails if len(mails) == 2 else None

    start, finish = await eventually(both_mailed, timeout=60, what="the start and finish mails")
    assert start["X-Conveyor-Kind"] == "job.started"
    for mail in (start, finish):
        assert len(text_of(mail)) < 20_000
        assert len(html_of(mail)) < 40_000
    text = text_of(finish)
    assert f"Files:     {count} ({job.succeeded} delivered, {job.failed} failed)" in text
    assert f"  success     {job.succeeded:>8}" in text
    assert f"  fail        {job.failed:>8}" in text
    assert "claims-99.csv (3 attempts): GCS answered 403" in text
    assert "claims-00.csv" not in text  # the delivered ones are in the CSV only

    rows = attached_csv(finish)
    assert len(rows) == count
    by_name = {row["file"]: row for row in rows}
    assert set(by_name) == {f"claims-{i:02d}.csv" for i in range(count)}
    assert by_name["claims-99.csv"] == {
        "file": "claims-99.csv",
        "size_bytes": "100000",
        "status": "fail",
        "attempts": "3",
        "verified_by": "",
        "delivered_to": "",
        "error": "GCS answered 403",
    }
    assert by_name["claims-00.csv"]["verified_by"] == "md5:destination"
    assert by_name["claims-00.csv"]["delivered_to"] == "gs://h3031-in/claims-00.csv"
    assert len(attached_csv(start)) == count


async def test_no_mail_for_routes_with_notifications_off_or_removed(
    stack: Stack,
    aws: dict[str, Any],
    smtp: servers.SmtpServer,
    services: InProcessServices,
    tmp_path: Path,
) -> None:
    routes = write_routes(
        tmp_path / "routes.yaml",
        [
            route(stack, "H3101", ["quiet@client.example"], notify=False),
            route(stack, "H3102", ["loud@client.example"]),
        ],
        mail_from=MAIL_FROM,
    )
    ledger = Ledger.of(stack, aws)
    quiet, _ = await ledger.new_job("H3101", 2)
    removed, _ = await ledger.new_job("H3199", 2)  # its route is no longer in the file
    control, _ = await ledger.new_job("H3102", 2)
    task_count = len(services.tasks)
    services.start(run, settings(stack, routes, **smtp_settings(smtp)))

    for job in (quiet, removed, control):
        await ledger.announce(job)

    async def control_mailed_and_drained() -> bool:
        return bool(received(smtp, X_Conveyor_Job=control.job_id)) and await idle(
            aws["sqs"], stack.outputs["NotifierQueueUrl"]
        )

    await eventually(control_mailed_and_drained, timeout=30, what="the control job's mail")
    assert received(smtp, X_Conveyor_Job=quiet.job_id) == []
    assert received(smtp, X_Conveyor_Job=removed.job_id) == []
    assert received(smtp, X_Conveyor_Job=control.job_id)[0]["To"] == "loud@client.example"
    assert not services.tasks[task_count].done()  # a removed route is logged, not crashed on
    assert not await dlq_has_messages(aws, stack)


# --- transports -------------------------------------------------------------------------------


async def ses_raw_messages(moto: servers.Moto, job_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{moto.url}/moto-api/data.json")
    response.raise_for_status()
    sent = response.json().get("ses", {}).get("RawMessage", [])
    return [m for m in sent if f"X-Conveyor-Job: {job_id}" in m["raw_data"]]


@pytest.fixture
def ses_moto(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[servers.Moto]:
    """A moto server of its own for SES: its /moto-api/data.json (where sent mail
    is read) walks every S3 object the server holds and fails on some states
    that other tests leave behind. boto3's service-specific endpoint variable
    sends only SES there."""
    server = servers.start_moto(tmp_path_factory.mktemp("moto-ses"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", server.url)
    yield server
    server.process.stop()


async def test_job_mails_through_ses_v2_in_moto(
    stack: Stack,
    aws: dict[str, Any],
    ses_moto: servers.Moto,
    services: InProcessServices,
    tmp_path: Path,
) -> None:
    moto = ses_moto
    contacts = ["ses-a@client.example", "ses-b@client.example"]
    routes = write_routes(
        tmp_path / "routes.yaml", [route(stack, "H3201", contacts)], mail_from=MAIL_FROM
    )
    session = aioboto3.Session(region_name="us-east-1")
    async with session.client("sesv2") as sesv2:
        await sesv2.create_email_identity(EmailIdentity=MAIL_FROM)
    ledger = Ledger.of(stack, aws)
    job, entries = await ledger.new_job("H3201", 3)
    services.start(run, settings(stack, routes, transport="ses"))

    started = await ledger.announce(job)
    await ledger.publisher.publish(started)
    for entry in entries:
        await ledger.transfer(entry)  # the last one publishes job.finished

    async def both_sent() -> list[dict[str, Any]] | None:
        sent = await ses_raw_messages(moto, job.job_id)
        drained = await idle(aws["sqs"], stack.outputs["NotifierQueueUrl"])
        return sent if len(sent) >= 2 and drained else None

    sent = await eventually(both_sent, timeout=30, what="two SES sends")
    assert len(sent) == 2
    mails = [email.message_from_string(m["raw_data"], policy=email.policy.default) for m in sent]
    subjects = sorted(str(m["Subject"]) for m in mails)
    assert subjects == [
        f"Conveyor H3201 | {job.job_id} | finished: 3 delivered",
        f"Conveyor H3201 | {job.job_id} | started: 3 files",
    ]
    for message, mail in zip(sent, mails, strict=True):
        assert message["source"] == MAIL_FROM
        assert set(message["destinations"]) == set(contacts)
        assert mail["To"] == ", ".join(contacts)
        assert isinstance(mail, EmailMessage)
        assert mail.get_content_type() == "multipart/alternative"
    finish = next(m for m in mails if "finished" in str(m["Subject"]))
    assert isinstance(finish, EmailMessage)
    assert listed_files(text_of(finish)) == {
        f"claims-{i:02d}.csv": ("success", 1) for i in range(3)
    }


@pytest.fixture
def secured_smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.SmtpServer]:
    server = servers.start_smtp(
        tmp_path_factory.mktemp("smtp-tls"),
        starttls=True,
        username="conveyor",
        password=secrets.token_urlsafe(12),
    )
    yield server
    server.process.stop()


async def test_smtp_with_starttls_and_a_password_from_secrets_manager(
    stack: Stack,
    aws: dict[str, Any],
    secured_smtp: servers.SmtpServer,
    services: InProcessServices,
    tmp_path: Path,
) -> None:
    secret = f"{stack.name}/smtp"
    await aws["secretsmanager"].create_secret(
        Name=secret, SecretString=json.dumps({"password": secured_smtp.password})
    )
    routes = write_routes(
        tmp_path / "routes.yaml",
        [route(stack, "H3301", ["tls@client.example"])],
        mail_from=MAIL_FROM,
    )
    ledger = Ledger.of(stack, aws)
    job, _ = await ledger.new_job("H3301", 1)
    assert secured_smtp.certificate is not None
    services.start(
        run,
        settings(
            stack,
            routes,
            transport="smtp",
            smtp_host="127.0.0.1",
            smtp_port=secured_smtp.port,
            smtp_starttls=True,
            smtp_username="conveyor",
            smtp_password_secret=secret,
            smtp_ca_file=secured_smtp.certificate,
        ),
    )
    await ledger.announce(job)

    async def mailed() -> list[EmailMessage]:
        return received(secured_smtp, X_Conveyor_Job=job.job_id)

    mails = await eventually(mailed, timeout=30, what="a mail over STARTTLS with AUTH")
    assert mails[0]["Subject"] == f"Conveyor H3301 | {job.job_id} | started: 1 file"


async def test_a_transport_that_is_down_leads_to_retries_not_lost_mail(
    stack: Stack, aws: dict[str, Any], tmp_path: Path
) -> None:
    port = free_port()  # nothing listens here yet
    routes = write_routes(
        tmp_path / "routes.yaml",
        [route(stack, "H3401", ["late@client.example"])],
        mail_from=MAIL_FROM,
    )
    env = process_env(
        stack, routes, port, CONVEYOR_SEND_RETRY_SECONDS="1", CONVEYOR_SEND_ATTEMPTS="2"
    )
    ledger = Ledger.of(stack, aws)
    job, _ = await ledger.new_job("H3401", 1)
    notifier = service_process("conveyor_notifier", tmp_path / "notifier.log", env)
    late: servers.SmtpServer | None = None
    try:
        await ledger.announce(job)

        async def send_failed() -> bool:
            return any(
                e.get("event") == "message.failed" and e.get("job_id") == job.job_id
                for e in json_lines(tmp_path / "notifier.log")
            )

        await eventually(send_failed, timeout=30, what="a failed send")
        late = servers.start_smtp(tmp_path / "late-smtp", port=port)

        async def delivered_and_drained() -> bool:
            assert late is not None
            return bool(received(late, X_Conveyor_Job=job.job_id)) and await idle(
                aws["sqs"], stack.outputs["NotifierQueueUrl"]
            )

        await eventually(delivered_and_drained, timeout=60, what="the mail after the outage")
        assert len(received(late, X_Conveyor_Job=job.job_id)) == 1
        assert not await dlq_has_messages(aws, stack)
    finally:
        notifier.stop()
        if late is not None:
            late.process.stop()


# --- bad input and operators -----------------------------------------------------------------


async def test_malformed_events_go_to_the_dead_letter_queue_and_ops_hear_of_it(
    stack: Stack, aws: dict[str, Any], smtp: servers.SmtpServer, tmp_path: Path
) -> None:
    routes = write_routes(
        tmp_path / "routes.yaml",
        [route(stack, "H3501", ["c@client.example"])],
        mail_from=MAIL_FROM,
        ops={"emails": [OPS]},
    )
    env = process_env(stack, routes, smtp.port, CONVEYOR_DEAD_LETTER_POLL_SECONDS="1")
    notifier = service_process("conveyor_notifier", tmp_path / "notifier.log", env)
    topic = stack.outputs["EventsTopicArn"]
    queue = f"{stack.name}-notifier-dlq"
    try:
        await aws["sns"].publish(TopicArn=topic, Message="this is not JSON")
        await aws["sns"].publish(
            TopicArn=topic, Message=json.dumps({"kind": "job.started", "v": 1, "job_id": "x"})
        )

        async def two_dead_letters_reported() -> list[EmailMessage]:
            return [
                m
                for m in received(smtp, X_Conveyor_Queue=queue)
                if str(m["Subject"]).endswith("| 2 waiting")
            ]

        alerts = await eventually(two_dead_letters_reported, timeout=60, what="an ops alert")
        assert notifier.running()
    finally:
        notifier.stop()

    assert alerts[0]["To"] == OPS
    assert alerts[0]["Subject"] == f"Conveyor ops | dead letters | {queue} | 2 waiting"
    subjects = [str(m["Subject"]) for m in received(smtp, X_Conveyor_Queue=queue)]
    assert len(subjects) == len(set(subjects))  # each rise reported once
    malformed = [
        e for e in json_lines(tmp_path / "notifier.log") if e.get("event") == "message.malformed"
    ]
    reasons = {e["reason"].split(" (")[0] for e in malformed}
    assert "body is not JSON" in reasons
    assert any(
        e["reason"].startswith(
            "unknown or invalid message (kind='job.started'): job.started.client_id: Field required"
        )
        for e in malformed
    )
    assert all(e["level"] == "error" for e in malformed)


# --- Slack (S6) -------------------------------------------------------------------------------


@dataclass
class SlackPost:
    channel: str
    text: str
    at: float
    status: int


@dataclass
class SlackEndpoint:
    """A local stand-in for Slack's incoming webhooks: records every post and
    answers the first post to each channel with 429 and ``Retry-After: 1``."""

    url: str
    posts: list[SlackPost] = field(default_factory=list)

    def to(self, channel: str) -> list[SlackPost]:
        return [p for p in self.posts if p.channel == channel]


@pytest.fixture
async def slack() -> AsyncIterator[SlackEndpoint]:
    port = free_port()
    endpoint = SlackEndpoint(f"http://127.0.0.1:{port}")

    async def webhook(request: web.Request) -> web.Response:
        channel = request.match_info["channel"]
        first = not endpoint.to(channel)
        text = (await request.json())["text"]
        endpoint.posts.append(SlackPost(channel, text, time.monotonic(), 429 if first else 200))
        if first:
            return web.Response(status=429, text="rate_limited", headers={"Retry-After": "1"})
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/services/{channel}", webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield endpoint
    await runner.cleanup()


async def test_slack_gets_one_message_per_batch_and_honours_429(
    stack: Stack,
    aws: dict[str, Any],
    slack: SlackEndpoint,
    services: InProcessServices,
    tmp_path: Path,
) -> None:
    for channel in ("care", "ops"):
        await aws["secretsmanager"].create_secret(
            Name=f"{stack.name}/slack-{channel}",
            SecretString=json.dumps({"url": f"{slack.url}/services/{channel}"}),
        )
    routes = write_routes(
        tmp_path / "routes.yaml",
        [route(stack, "H3601", ["c@client.example"])],
        mail_from=MAIL_FROM,
        ops={"slack": {"secret": f"{stack.name}/slack-ops"}},
        care_team={"slack": {"secret": f"{stack.name}/slack-care"}},
    )
    publisher = EventPublisher(aws["sns"], stack.outputs["EventsTopicArn"])
    received_files = [
        FileReceived(
            source="plan-sftp",
            partner_id="P0042",
            file_name=f"care-report-{i}.pdf",
            s3_uri=f"s3://{stack.pickup_bucket}/providers/P0042/care-report-{i}.pdf",
            size=4096 * (i + 1),
            audience="care_team",
        )
        for i in range(6)
    ]
    roster = received_files[0].model_copy(update={"file_name": "roster.csv", "audience": "process"})
    failures = [
        FileFailed(
            job_id="H3601-20261121T101500Z-abcdef",
            client_id="H3601",
            content_id=f"etag-{i}",
            file_name=f"claims-{i}.csv",
            attempts=3,
            error="GCS answered 403",
        )
        for i in range(2)
    ]
    with stamina.set_testing(False):  # Retry-After is honoured for real
        services.start(
            run,
            settings(stack, routes, slack_batch_seconds=2.0, ops_batch_seconds=2.0),
        )
        for event in [*received_files, roster, received_files[0]]:  # the last: a duplicate
            await publisher.publish(event)

        async def care_posted() -> bool:
            return any(p.status == 200 for p in slack.to("care"))

        await eventually(care_posted, timeout=30, what="the care team's Slack message")
        for event in failures:
            await publisher.publish(event)

        async def ops_posted_and_drained() -> bool:
            return any(p.status == 200 for p in slack.to("ops")) and await idle(
                aws["sqs"], stack.outputs["NotifierQueueUrl"]
            )

        await eventually(ops_posted_and_drained, timeout=30, what="the ops Slack message")

    throttled, care = slack.to("care")
    assert (throttled.status, care.status) == (429, 200)
    assert care.at - throttled.at >= 1.0  # waited as Retry-After said
    assert care.text == throttled.text
    assert care.text.startswith(":inbox_tray: *6 new files from plan-sftp* (partner P0042)")
    assert all(f"`care-report-{i}.pdf`" in care.text for i in range(6))
    assert "roster.csv" not in care.text

    throttled, ops = slack.to("ops")
    assert (throttled.status, ops.status) == (429, 200)
    assert ops.text.startswith(
        ":x: *2 files of job H3601-20261121T101500Z-abcdef for client H3601 failed*"
    )
    assert "`claims-0.csv` (3 attempts): GCS answered 403" in ops.text
    assert len(slack.posts) == 4


# --- the idempotency record itself ----------------------------------------------------------


async def test_notification_record_claims_leases_and_sent_state(
    stack: Stack, aws: dict[str, Any]
) -> None:
    records = NotificationRecords(aws["dynamodb"], f"{stack.name}-notifications", lease_seconds=2)
    key = "H3701-20261121T101500Z-abcdef#job.finished"

    assert (await records.claim(key, "message-1")).state is ClaimState.CLAIMED
    # The same SQS message, redelivered after a crash, reclaims at once.
    assert (await records.claim(key, "message-1")).state is ClaimState.CLAIMED
    held = await records.claim(key, "message-2")
    assert held.state is ClaimState.HELD
    assert 1 <= held.expires_in <= 2
    await records.release(key, "message-2")  # not its claim: nothing changes
    assert (await records.claim(key, "message-2")).state is ClaimState.HELD

    async def taken_over() -> bool:
        return (await records.claim(key, "message-2")).state is ClaimState.CLAIMED

    await eventually(taken_over, timeout=10, what="the lease to run out")
    assert not await records.mark_sent(key, "message-1", "late")  # lost its claim
    assert await records.mark_sent(key, "message-2", "250 OK")
    for owner in ("message-1", "message-2", "message-3"):
        assert (await records.claim(key, owner)).state is ClaimState.SENT
    item = await records.get(key)
    assert item is not None
    assert (item["state"], item["owner"], item["receipt"]) == ("sent", "message-2", "250 OK")
    assert item["ttl"] > time.time() + 80 * 86400

    # A failed send releases its claim: the redelivery need not wait for the lease.
    other = "H3701-20261121T101500Z-abcdef#job.started"
    assert (await records.claim(other, "message-4")).state is ClaimState.CLAIMED
    await records.release(other, "message-4")
    assert (await records.claim(other, "message-5")).state is ClaimState.CLAIMED
