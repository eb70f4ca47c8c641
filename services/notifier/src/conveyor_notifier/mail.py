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
#: CRLF line ends, and header lines up to RFC 5322's limit: folding a subject
#: at 78 characters puts all of it on a continuation line, which some readers
#: (Python's own parser among them) show with a leading space.
_POLICY = email.policy.SMTP.clone(max_line_length=998)


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
    """A ``multipart/alternative`` message: the plain text first, the HTML second."""
    message = EmailMessage(policy=_POLICY)
    message["Subject"] = mail.subject
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
