"""What people see: e-mail subjects and bodies (HTML and plain text) and Slack
texts, rendered from the Jinja2 templates in ``templates/``.

Subjects sort well in an inbox: a fixed prefix, the client id, the job id
(which begins with the client id and the job's UTC start time), then the
outcome, e.g. ``Conveyor H1234 | H1234-20261121T101500Z-3f9a1c | started: 50 files``.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import jinja2

from conveyor_shared.ledger.models import FileEntry, FileStatus
from conveyor_shared.messaging.models import FileFailed, FileReceived

_SIZE_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")
#: A Slack message lists at most this many items; the rest are counted.
SLACK_LIST_LIMIT = 50


def human_size(size: int | None) -> str:
    """``1234567`` -> ``1.2 MB`` (powers of 1000, as file managers show them)."""
    if size is None:
        return "unknown"
    value = float(size)
    for unit in _SIZE_UNITS:
        if value < 1000 or unit == _SIZE_UNITS[-1]:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def format_time(when: datetime | None) -> str:
    if when is None:
        return "-"
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def slack_escape(text: str) -> str:
    """Slack's mrkdwn treats ``&``, ``<`` and ``>`` as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


_env = jinja2.Environment(
    loader=jinja2.PackageLoader("conveyor_notifier", "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_env.filters |= {
    "filesize": human_size,
    "when": format_time,
    "slack": slack_escape,
    "plural": plural,
}


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    maintype: str = "text"
    subtype: str = "csv"


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str
    attachments: Sequence[Attachment] = ()


@dataclass(frozen=True)
class FileLine:
    name: str
    size: int | None
    status: str
    attempts: int
    #: Why it failed (failed files only).
    error: str | None = None
    #: How the delivered copy was checked (``md5:destination``, ``size``, ...).
    verified_by: str | None = None
    delivered_to: str | None = None

    @classmethod
    def of(cls, entry: FileEntry) -> FileLine:
        failed = entry.status is FileStatus.FAIL
        return cls(
            name=entry.file_name,
            size=entry.size,
            status=entry.status.value,
            attempts=entry.send_attempts,
            error=(entry.last_error or "no reason recorded") if failed else None,
            verified_by=entry.verified_by,
            delivered_to=entry.delivered_to,
        )


@dataclass(frozen=True)
class JobReport:
    kind: Literal["started", "finished"]
    client_id: str
    route_name: str
    job_id: str
    started_at: datetime
    finished_at: datetime | None
    total: int
    succeeded: int = 0
    failed: int = 0
    files: Sequence[FileLine] = field(default_factory=tuple)
    #: Above this many files the body is a summary and the full list an attached
    #: CSV, so a job of ten thousand files still gets a mail of a few kilobytes.
    list_limit: int = 200

    @property
    def summarised(self) -> bool:
        return len(self.files) > self.list_limit

    @property
    def failures(self) -> list[FileLine]:
        return [f for f in self.ordered_files if f.status == FileStatus.FAIL.value]

    @property
    def ordered_files(self) -> list[FileLine]:
        """Failures first (they need attention), then by name."""
        return sorted(self.files, key=lambda f: (f.status != FileStatus.FAIL.value, f.name))

    @property
    def status_counts(self) -> list[tuple[str, int]]:
        """``(status, files)`` in the order a reader cares: failures first."""
        counts = Counter(f.status for f in self.files)
        order = [FileStatus.FAIL.value, FileStatus.PROCESSING.value, FileStatus.SUCCESS.value]
        return sorted(counts.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 3)

    @property
    def shows_verification(self) -> bool:
        return any(f.verified_by for f in self.files)

    @property
    def name_width(self) -> int:
        return max([len("File"), *(len(f.name) for f in self.files)])

    @property
    def csv_name(self) -> str:
        return f"{self.job_id}-files.csv"


def job_outcome(report: JobReport) -> str:
    if report.kind == "started":
        return f"started: {plural(report.total, 'file')}"
    if report.failed == 0:
        return f"finished: {report.succeeded} delivered"
    return f"finished with failures: {report.succeeded} delivered, {report.failed} failed"


def job_subject(report: JobReport) -> str:
    return f"Conveyor {report.client_id} | {report.job_id} | {job_outcome(report)}"


def _mail(template: str, subject: str, **context: object) -> RenderedMail:
    return RenderedMail(
        subject=subject,
        text=_env.get_template(f"{template}.txt").render(subject=subject, **context),
        html=_env.get_template(f"{template}.html").render(subject=subject, **context),
    )


#: The attached list's columns; empty cells where the ledger has nothing.
CSV_COLUMNS = ("file", "size_bytes", "status", "attempts", "verified_by", "delivered_to", "error")


def files_csv(files: Sequence[FileLine]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for f in files:
        writer.writerow(
            [f.name, f.size, f.status, f.attempts, f.verified_by, f.delivered_to, f.error]
        )
    return out.getvalue().encode()


def render_job_mail(report: JobReport) -> RenderedMail:
    mail = _mail(f"job_{report.kind}", job_subject(report), report=report)
    if not report.summarised:
        return mail
    attachment = Attachment(report.csv_name, files_csv(report.ordered_files))
    return RenderedMail(mail.subject, mail.text, mail.html, (attachment,))


def render_failure_alert(
    client_id: str, job_id: str, failures: Sequence[FileFailed]
) -> RenderedMail:
    subject = f"Conveyor ops | {client_id} | {job_id} | {plural(len(failures), 'file')} failed"
    return _mail("ops_failures", subject, client_id=client_id, job_id=job_id, failures=failures)


def render_dead_letter_alert(queue: str, count: int, previous: int) -> RenderedMail:
    subject = f"Conveyor ops | dead letters | {queue} | {count} waiting"
    return _mail("ops_dead_letters", subject, queue=queue, count=count, previous=previous)


def _slack(template: str, **context: object) -> dict[str, str]:
    text = _env.get_template(f"{template}.slack").render(limit=SLACK_LIST_LIMIT, **context)
    return {"text": text.strip()}


def slack_care_team_files(source: str, files: Sequence[FileReceived]) -> dict[str, str]:
    return _slack("care_team_files", source=source, files=files)


def slack_failures(client_id: str, job_id: str, failures: Sequence[FileFailed]) -> dict[str, str]:
    return _slack("ops_failures", client_id=client_id, job_id=job_id, failures=failures)


def slack_dead_letters(queue: str, count: int, previous: int) -> dict[str, str]:
    return _slack("ops_dead_letters", queue=queue, count=count, previous=previous)
