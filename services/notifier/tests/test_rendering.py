"""What people see: subjects, plain-text and HTML bodies, Slack texts; and the
small pure pieces around them (sizes, Retry-After, settings, the batch window)."""

from __future__ import annotations

import asyncio
import csv
import email
import email.policy
import io
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

import pytest
from aiosmtplib.email import flatten_message
from pydantic import ValidationError

from conveyor_notifier.mail import build_message, message_id
from conveyor_notifier.render import (
    FileLine,
    JobReport,
    RenderedMail,
    human_size,
    render_dead_letter_alert,
    render_failure_alert,
    render_job_mail,
    slack_care_team_files,
    slack_failures,
)
from conveyor_notifier.settings import NotifierSettings
from conveyor_notifier.slack import retry_after_seconds
from conveyor_shared.messaging.batching import BatchWindow
from conveyor_shared.messaging.models import FileFailed, FileReceived

STARTED = datetime(2026, 11, 21, 10, 15, 0, tzinfo=UTC)
JOB = "H1234-20261121T101500Z-3f9a1c"


def report(kind: str, files: list[FileLine], **counts: int) -> JobReport:
    return JobReport(
        kind=kind,  # type: ignore[arg-type]
        client_id="H1234",
        route_name="Acme Health",
        job_id=JOB,
        started_at=STARTED,
        finished_at=STARTED + timedelta(minutes=2, seconds=3) if kind == "finished" else None,
        total=len(files),
        files=files,
        **counts,
    )


def table(text: str) -> dict[str, tuple[str, str, str]]:
    """The plain-text file table: name -> (size, status, attempts)."""
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0].endswith(".csv"):
            rows[parts[0]] = (f"{parts[1]} {parts[2]}", parts[3], parts[4])
    return rows


FINISHED_FILES = [
    FileLine("members-2026-11.csv", 2_500_000_000, "success", 1),
    FileLine("claims-2026-11.csv", 48_213, "success", 2),
    FileLine("rx-2026-11.csv", 1_000, "fail", 3, "SFTP server refused the login"),
]


def test_started_mail_lists_every_file_with_size_status_and_attempts() -> None:
    files = [FileLine(f"f{i}.csv", 1000 * i, "processing", 0) for i in range(1, 4)]

    mail = render_job_mail(report("started", files))

    assert mail.subject == f"Conveyor H1234 | {JOB} | started: 3 files"
    assert "client H1234" in mail.text
    assert "Started:  2026-11-21 10:15:00 UTC" in mail.text
    assert table(mail.text) == {
        "f1.csv": ("1.0 kB", "processing", "0"),
        "f2.csv": ("2.0 kB", "processing", "0"),
        "f3.csv": ("3.0 kB", "processing", "0"),
    }
    assert all(f"f{i}.csv" in mail.html for i in range(1, 4))


def test_finished_mail_summarises_counts_and_gives_each_failure_reason() -> None:
    mail = render_job_mail(report("finished", FINISHED_FILES, succeeded=2, failed=1))

    assert mail.subject == (
        f"Conveyor H1234 | {JOB} | finished with failures: 2 delivered, 1 failed"
    )
    assert "Files:     3 (2 delivered, 1 failed)" in mail.text
    assert "Finished:  2026-11-21 10:17:03 UTC" in mail.text
    assert "  - rx-2026-11.csv (3 attempts): SFTP server refused the login" in mail.text
    assert table(mail.text) == {
        "members-2026-11.csv": ("2.5 GB", "success", "1"),
        "claims-2026-11.csv": ("48.2 kB", "success", "2"),
        "rx-2026-11.csv": ("1.0 kB", "fail", "3"),
    }
    # Failures come first: they are what a reader must act on.
    assert mail.text.index("rx-2026-11.csv  ") < mail.text.index("claims-2026-11.csv  ")
    assert "SFTP server refused the login" in mail.html


def test_finished_mail_shows_how_each_file_was_verified() -> None:
    files = [
        FileLine("a.csv", 10, "success", 1, verified_by="md5:destination"),
        FileLine("b.csv", 20, "success", 1, verified_by="size"),
        FileLine("c.csv", 30, "success", 2),
    ]
    mail = render_job_mail(report("finished", files, succeeded=3, failed=0))

    rows = [line.split() for line in mail.text.splitlines() if ".csv  " in line]
    assert rows == [
        ["a.csv", "10", "B", "success", "1", "md5:destination"],
        ["b.csv", "20", "B", "success", "1", "size"],
        ["c.csv", "30", "B", "success", "2", "-"],
    ]
    assert "Verified" in mail.text
    assert ">Verified</th>" in mail.html
    assert ">md5:destination</td>" in mail.html
    plain = render_job_mail(report("finished", FINISHED_FILES, succeeded=2, failed=1))
    assert "Verified" not in plain.text  # nothing recorded: no empty column


def test_job_of_many_files_gets_a_summary_and_the_full_list_as_csv() -> None:
    files = [FileLine(f"f{i:03d}.csv", i, "success", 1, verified_by="size") for i in range(230)]
    files += [FileLine(f"x{i:03d}.csv", i, "fail", 3, f"refused {i}") for i in range(220)]
    big = report("finished", files, succeeded=230, failed=220)
    assert big.list_limit == 200

    mail = render_job_mail(big)

    assert "450 files are too many to list here" in mail.text
    assert f"the attached {JOB}-files.csv" in mail.text
    assert "  fail             220\n  success          230\n" in mail.text
    listed = [line for line in mail.text.splitlines() if line.startswith("  - x")]
    assert len(listed) == 200  # failures are listed, up to the limit
    assert "  ... and 20 more failed files, in the attached" in mail.text
    assert "f000.csv" not in mail.text
    assert "f000.csv" not in mail.html
    assert len(mail.text) < 20_000
    assert len(mail.html) < 40_000
    [attachment] = mail.attachments
    assert attachment.filename == f"{JOB}-files.csv"
    rows = list(csv.reader(io.StringIO(attachment.content.decode())))
    assert rows[0] == [
        "file", "size_bytes", "status", "attempts", "verified_by", "delivered_to", "error"
    ]  # fmt: skip
    assert len(rows) == 451
    assert rows[1] == ["x000.csv", "0", "fail", "3", "", "", "refused 0"]
    assert ["f229.csv", "229", "success", "1", "size", "", ""] in rows

    built = build_message(mail, sender="c@d.example", recipients=["a@b.example"], notice="n")
    parsed = email.message_from_bytes(built.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed.get_content_type() == "multipart/mixed"
    text = parsed.get_body(("plain",))
    assert text is not None
    assert "450 files are too many" in text.get_content()
    [part] = parsed.iter_attachments()
    assert part.get_content_type() == "text/csv"
    assert part.get_filename() == f"{JOB}-files.csv"
    assert part.get_content().replace("\r\n", "\n").count("\n") == 451


def test_a_job_at_the_limit_is_listed_in_full_without_an_attachment() -> None:
    files = [FileLine(f"f{i:03d}.csv", i, "processing", 0) for i in range(200)]
    mail = render_job_mail(report("started", files))
    assert len(table(mail.text)) == 200
    assert mail.attachments == ()


def test_finished_subject_when_everything_was_delivered() -> None:
    files = FINISHED_FILES[:2]
    mail = render_job_mail(report("finished", files, succeeded=2, failed=0))
    assert mail.subject == f"Conveyor H1234 | {JOB} | finished: 2 delivered"
    assert "Every file of job" in mail.text
    assert "Failed files" not in mail.text


def test_subjects_sort_by_client_then_job() -> None:
    def subject(client: str, job: str) -> str:
        files = [FileLine("a.csv", 1, "processing", 0)]
        return render_job_mail(
            JobReport("started", client, "r", job, STARTED, None, 1, files=files)
        ).subject

    subjects = [
        subject("H2000", "H2000-20261121T090000Z-aaaaaa"),
        subject("H1000", "H1000-20261122T090000Z-bbbbbb"),
        subject("H1000", "H1000-20261121T090000Z-cccccc"),
    ]
    assert sorted(subjects) == [subjects[2], subjects[1], subjects[0]]


def test_html_escapes_file_names_and_errors() -> None:
    files = [FileLine("<script>x</script>.csv", 5, "fail", 3, "bad <b>reply</b>")]
    mail = render_job_mail(report("finished", files, succeeded=0, failed=1))
    assert "<script>" not in mail.html
    assert "&lt;script&gt;x&lt;/script&gt;.csv" in mail.html
    assert "bad &lt;b&gt;reply&lt;/b&gt;" in mail.html
    assert "<script>x</script>.csv" in mail.text


def test_message_is_multipart_alternative_with_a_stable_message_id() -> None:
    mail = render_job_mail(report("finished", FINISHED_FILES, succeeded=2, failed=1))
    built = build_message(
        mail,
        sender="conveyor@delivery.example",
        recipients=["a@client.example", "b@client.example"],
        notice=f"{JOB}#job.finished",
        headers={"X-Conveyor-Job": JOB},
    )
    parsed = email.message_from_bytes(built.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["Subject"] == mail.subject
    assert parsed["To"] == "a@client.example, b@client.example"
    assert parsed["Message-ID"] == f"<{JOB}#job.finished@delivery.example>"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["X-Conveyor-Job"] == JOB
    text, html = (parsed.get_body((kind,)) for kind in ("plain", "html"))
    assert text is not None
    assert "rx-2026-11.csv" in text.get_content()
    assert html is not None
    assert "<table" in html.get_content()


def subject_lines(raw: bytes) -> list[bytes]:
    """The raw ``Subject`` header: its first line and its continuation lines."""
    lines = raw.split(b"\r\n\r\n")[0].split(b"\r\n")
    first = next(i for i, line in enumerate(lines) if line.startswith(b"Subject:"))
    rest = lines[first + 1 :]
    more = next((i for i, line in enumerate(rest) if not line.startswith(b" ")), len(rest))
    return [lines[first], *rest[:more]]


@pytest.mark.parametrize(
    "subject",
    [
        # 71 to 77 characters: what the email package alone moves whole onto a
        # continuation line, leaving "Subject:" empty.
        "Conveyor ops | dead letters | conveyor-test-abcdef-notifier-dlq | 2 waiting",
        f"Conveyor H1234 | {JOB} | finished: 10000 delivered",
        f"Conveyor H1234 | {JOB} | finished with failures: 9998 delivered, 2 failed",
        f"Conveyor ops | H1234 | {JOB} | 12 files failed, and a few more words to fold",
    ],
)
def test_long_subject_folds_after_its_first_words_in_the_raw_message(subject: str) -> None:
    built = build_message(
        RenderedMail(subject, "text", "<p>html</p>"),
        sender="c@delivery.example",
        recipients=["a@client.example"],
        notice="n",
    )
    assert len(subject) > 78 - len("Subject: ")
    # SES sends as_bytes(); aiosmtplib flattens the message with its own policy.
    for raw in (built.as_bytes(), flatten_message(built)):
        lines = subject_lines(raw)
        assert lines[0].startswith(b"Subject: Conveyor ")
        assert len(lines) >= 2
        assert all(len(line) <= 78 for line in lines)
        assert b"".join(lines) == f"Subject: {subject}".encode()  # RFC 5322 unfolding
        for policy in (email.policy.default, email.policy.SMTP):
            assert email.message_from_bytes(raw, policy=policy)["Subject"] == subject


def test_short_and_non_ascii_subjects() -> None:
    short = build_message(
        RenderedMail("Conveyor H1 | job | started: 1 file", "t", "<p>h</p>"),
        sender="c@d.example",
        recipients=["a@client.example"],
        notice="n",
    )
    assert subject_lines(short.as_bytes()) == [b"Subject: Conveyor H1 | job | started: 1 file"]
    subject = f"Conveyor H1234 | {JOB} | started: 3 files for Zürich Gesundheit"
    encoded = build_message(
        RenderedMail(subject, "t", "<p>h</p>"),
        sender="c@d.example",
        recipients=["a@client.example"],
        notice="n",
    ).as_bytes()
    assert all(len(line) <= 78 for line in subject_lines(encoded))
    assert email.message_from_bytes(encoded, policy=email.policy.default)["Subject"] == subject


def test_message_id_keeps_only_safe_characters() -> None:
    assert message_id("job 1/<x>#job.started", "c@d.example") == "<job_1__x_#job.started@d.example>"


def test_ops_alerts() -> None:
    failures = [
        FileFailed(
            job_id=JOB,
            client_id="H1234",
            content_id=f"c{i}",
            file_name=f"f{i}.csv",
            attempts=3,
            error=f"reason {i}",
        )
        for i in range(2)
    ]
    alert = render_failure_alert("H1234", JOB, failures)
    assert alert.subject == f"Conveyor ops | H1234 | {JOB} | 2 files failed"
    assert "f0.csv (3 attempts" in alert.text
    assert "reason 1" in alert.text
    dead = render_dead_letter_alert("conveyor-notifier-dlq", 2, 0)
    assert dead.subject == "Conveyor ops | dead letters | conveyor-notifier-dlq | 2 waiting"
    assert "2 messages are waiting" in dead.text
    assert slack_failures("H1234", JOB, failures)["text"].count("\n•") == 2


def test_care_team_slack_text_escapes_and_truncates() -> None:
    files = [
        FileReceived(
            source="plan-sftp",
            partner_id="P0042",
            file_name=f"report <{i}>.pdf",
            s3_uri=f"s3://inbox/P0042/report-{i}.pdf",
            size=2048,
            audience="care_team",
        )
        for i in range(60)
    ]
    text = slack_care_team_files("plan-sftp", files)["text"]
    assert text.startswith(":inbox_tray: *60 new files from plan-sftp* (partner P0042)")
    assert "report &lt;0&gt;.pdf" in text
    assert "<0>" not in text
    assert text.count("\n•") == 50
    assert text.endswith("…and 10 more.")


@pytest.mark.parametrize(
    ("size", "shown"),
    [(None, "unknown"), (0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (3_210_000_000, "3.2 GB")],
)
def test_human_size(size: int | None, shown: str) -> None:
    assert human_size(size) == shown


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) == 1.0
    assert retry_after_seconds("soon") == 1.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after_seconds(later) <= 30


def settings(**overrides: object) -> NotifierSettings:
    return NotifierSettings.model_validate(
        {"routes_uri": "/etc/conveyor/routes.yaml", "environment": "test", **overrides}
    )


def test_settings_refuse_unsafe_mail_configuration() -> None:
    with pytest.raises(ValidationError, match="go together"):
        settings(smtp_username="conveyor")
    with pytest.raises(ValidationError, match="STARTTLS"):
        settings(environment="production", transport="smtp", smtp_starttls=False)
    with pytest.raises(ValidationError, match="must exceed"):
        settings(claim_lease_seconds=60, send_retry_seconds=60)
    ok = settings(smtp_username="conveyor", smtp_password_secret="conveyor/smtp")  # noqa: S106
    assert ok.transport == "ses"
    assert ok.watched_dead_letter_queues == ["conveyor-scanner-dlq", "conveyor-notifier-dlq"]


def test_settings_have_no_inline_password() -> None:
    # Only the name of a Secrets Manager secret can be given, never the password.
    assert "smtp_password" not in NotifierSettings.model_fields


async def test_batch_window_flushes_a_burst_once_and_hands_each_item_its_outcome() -> None:
    flushed: list[tuple[str, list[int]]] = []

    async def flush(group: str, items: list[int]) -> list[Exception | None]:
        flushed.append((group, items))
        return [ValueError(f"odd {i}") if i % 2 else None for i in items]

    window: BatchWindow[int] = BatchWindow(
        flush, quiet_seconds=0.2, max_wait_seconds=0.2, max_items=3
    )
    results = await asyncio.gather(
        *(window.add("a", i) for i in (0, 1, 2, 4)), window.add("b", 6), return_exceptions=True
    )

    assert sorted(flushed) == [("a", [0, 1, 2]), ("a", [4]), ("b", [6])]
    assert [None if r is None else str(r) for r in results] == [None, "odd 1", None, None, None]


async def test_batch_window_fails_every_item_when_the_flush_fails() -> None:
    async def flush(group: str, items: list[int]) -> list[Exception | None]:
        raise ConnectionError("down")

    window: BatchWindow[int] = BatchWindow(
        flush, quiet_seconds=0.05, max_wait_seconds=0.05, max_items=10
    )
    results = await asyncio.gather(*(window.add("a", i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
