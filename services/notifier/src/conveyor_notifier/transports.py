"""Mail transports: Amazon SES (v2 API) in production, SMTP as the alternative.

Each one sends a finished MIME message and translates its library's errors at
this edge: ``TransientError`` (unreachable, throttled, 4xx: worth another
try), ``PermanentError`` (5xx, rejected: trying again will not help) and
``Misconfigured`` (bad credentials, an untrusted certificate, no STARTTLS).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib
import structlog
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, SecretStr

from conveyor_shared.errors import Misconfigured, PermanentError, TransientError
from conveyor_shared.secrets import SecretStore

log = structlog.get_logger("conveyor.notifier")


class MailTransport(Protocol):
    #: ``ses`` or ``smtp``, for log lines.
    name: str

    async def send(self, message: EmailMessage, sender: str, recipients: Sequence[str]) -> str:
        """Hand ``message`` to the mail system for ``recipients``; returns its
        receipt (the provider's message id or the server's reply).

        Raises ``TransientError`` when the mail system cannot be reached or asks
        us to come back, ``PermanentError`` when it refuses the message, and
        ``Misconfigured`` when our credentials or TLS settings are wrong.
        """
        ...


class SmtpPassword(BaseModel):
    """The JSON secret named by ``CONVEYOR_SMTP_PASSWORD_SECRET``."""

    model_config = ConfigDict(extra="forbid")
    password: SecretStr


class SmtpTransport:
    name = "smtp"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        starttls: bool,
        secrets: SecretStore,
        username: str | None = None,
        password_secret: str | None = None,
        ca_file: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._host = host
        self._port = port
        self._starttls = starttls
        self._secrets = secrets
        self._username = username
        self._password_secret = password_secret
        self._tls = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
        self._timeout = timeout

    @property
    def _where(self) -> str:
        return f"SMTP server {self._host}:{self._port}"

    async def _password(self) -> str | None:
        if self._password_secret is None:
            return None
        secret = await self._secrets.get(self._password_secret, SmtpPassword)
        return secret.password.get_secret_value()

    async def send(self, message: EmailMessage, sender: str, recipients: Sequence[str]) -> str:
        password = await self._password()
        try:
            refused, reply = await aiosmtplib.send(
                message,
                sender=sender,
                recipients=list(recipients),
                hostname=self._host,
                port=self._port,
                start_tls=self._starttls,
                tls_context=self._tls,
                username=self._username,
                password=password,
                timeout=self._timeout,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise self._translate(exc) from None
        if refused:
            # Some recipients took it: sending again would duplicate it for them.
            log.warning("mail.recipients_refused", refused=sorted(refused), transport=self.name)
        return reply

    def _translate(self, exc: aiosmtplib.SMTPException | OSError) -> Exception:
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            return Misconfigured(f"{self._where} refused the credentials of {self._username!r}")
        if isinstance(exc, aiosmtplib.SMTPNotSupported):
            return Misconfigured(f"{self._where}: {exc.message}")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return Misconfigured(f"{self._where}: certificate not trusted ({exc.verify_message})")
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            codes = [r.code for r in exc.recipients]
            text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            kind = TransientError if any(400 <= c < 500 for c in codes) else PermanentError
            return kind(f"{self._where} refused every recipient: {text}")
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            kind = PermanentError if exc.code >= 500 else TransientError
            return kind(f"{self._where} answered {exc.code} {exc.message}")
        return TransientError(f"{self._where} unreachable: {type(exc).__name__}: {exc}")


#: SES error codes that another try may get past.
_SES_TRANSIENT = frozenset(
    {
        "TooManyRequestsException",
        "Throttling",
        "ThrottlingException",
        "LimitExceededException",
        "InternalFailure",
        "ServiceUnavailable",
    }
)


class SesTransport:
    name = "ses"

    def __init__(self, client: Any, configuration_set: str | None = None) -> None:
        self._ses = client
        self._configuration_set = configuration_set

    async def send(self, message: EmailMessage, sender: str, recipients: Sequence[str]) -> str:
        extra = {"ConfigurationSetName": self._configuration_set} if self._configuration_set else {}
        try:
            response = await self._ses.send_email(
                FromEmailAddress=sender,
                Destination={"ToAddresses": list(recipients)},
                Content={"Raw": {"Data": message.as_bytes()}},
                **extra,
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            kind = (
                TransientError
                if code in _SES_TRANSIENT or status == 429 or status >= 500
                else PermanentError
            )
            raise kind(f"SES refused the mail ({code}): {error.get('Message', '')}") from None
        except BotoCoreError as exc:
            raise TransientError(f"SES unreachable: {type(exc).__name__}: {exc}") from None
        return str(response["MessageId"])
