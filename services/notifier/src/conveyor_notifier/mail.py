"""Turning a rendered mail into a MIME message and sending it with retries."""

from __future__ import annotations

import email.policy
import re
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate

import structlog

from conveyor_notifier.render import RenderedMail
from conveyor_notifier.retries import RetryPolicy
from conveyor_notifier.transports import MailTransport

log = structlog.get_logger("conveyor.notifier")

_NOT_ATEXT = re.compile(r"[^A-Za-z0-9.#+_=-]")
#: CRLF line ends and 78-character lines (RFC 5322): the policy aiosmtplib
#: flattens with too, so SES and SMTP send the same bytes.
_POLICY = email.policy.SMTP


def fold_header(name: str, value: str, width: int = 78) -> str:
    """``value`` folded at spaces into lines of at most ``width`` with the
    header's name, the first words on the header's own line.

    The email package's folder moves a value that fits on a line by itself
    (71 to 77 characters for a subject) whole onto a continuation line, leaving
    ``Subject:`` empty; readers that unfold it keep a leading space. A word
    longer than a line stays whole (the policy then refolds that line).
    """
    words = value.split(" ")
    lines = [f"{name}: {words[0]}"]
    for word in words[1:]:
        if word and len(lines[-1]) + 1 + len(word) > width:
            lines.append(f" {word}")
        else:
            lines[-1] += f" {word}"
    return "\r\n".join(lines)[len(name) + 2 :]


def _set_subject(message: EmailMessage, subject: str) -> None:
    if subject.isascii() and subject.isprintable():
        message.set_raw("Subject", fold_header("Subject", subject))
    else:  # needs RFC 2047 encoded words, which the policy folds itself
        message["Subject"] = subject


def message_id(notice: str, sender: str) -> str:
    """A Message-ID derived from the notification's key, the same on every try:
    a mail system that keeps it can fold a repeated send into one mail."""
    domain = sender.rpartition("@")[2] or "localhost"
    return f"<{_NOT_ATEXT.sub('_', notice)}@{domain}>"


def build_message(
    mail: RenderedMail,
    *,
    sender: str,
    recipients: Sequence[str],
    notice: str,
    headers: Mapping[str, str] | None = None,
) -> EmailMessage:
    """A ``multipart/alternative`` message, the plain text first, the HTML
    second; with attachments, that inside a ``multipart/mixed``."""
    message = EmailMessage(policy=_POLICY)
    _set_subject(message, mail.subject)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id(notice, sender)
    # RFC 3834: tells auto-responders (out-of-office) not to answer.
    message["Auto-Submitted"] = "auto-generated"
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(mail.text)
    message.add_alternative(mail.html, subtype="html")
    for attachment in mail.attachments:
        message.add_attachment(
            attachment.content,
            maintype=attachment.maintype,
            subtype=attachment.subtype,
            filename=attachment.filename,
            params={"charset": "utf-8"} if attachment.maintype == "text" else {},
        )
    return message


class Mailer:
    def __init__(self, transport: MailTransport, retry: RetryPolicy) -> None:
        self._transport = transport
        self._retry = retry

    @property
    def transport(self) -> str:
        return self._transport.name

    async def send(
        self,
        mail: RenderedMail,
        *,
        sender: str,
        recipients: Sequence[str],
        notice: str,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Send ``mail``, retrying transient failures; returns the transport's receipt."""
        message = build_message(
            mail, sender=sender, recipients=recipients, notice=notice, headers=headers
        )

        async def once() -> str:
            return await self._transport.send(message, sender, recipients)

        receipt = await self._retry.call(once)
        log.info(
            "mail.sent",
            notice=notice,
            subject=mail.subject,
            recipients=list(recipients),
            transport=self._transport.name,
            receipt=receipt,
        )
        return receipt
