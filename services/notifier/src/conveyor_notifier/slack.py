"""Posting to Slack incoming webhooks (S6), honouring rate limits.

The webhook URL is a credential: it comes from Secrets Manager by reference
(``{"url": "https://hooks.slack.com/..."}``) and never reaches a log line or
an error message. A 429 is waited out for as long as ``Retry-After`` says,
up to ``max_retry_after``; a longer wait hands the messages back to SQS for
that long instead of holding a worker.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
import structlog

from conveyor_notifier.retries import RetryPolicy
from conveyor_shared.config.models import SecretRef
from conveyor_shared.errors import PermanentError, TransientError
from conveyor_shared.messaging.consumer import RetryLater
from conveyor_shared.secrets import SecretStore, WebhookSecret

log = structlog.get_logger("conveyor.notifier")

SlackMessage = dict[str, str]


class SlackRateLimited(TransientError):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"Slack asked us to wait {retry_after:g}s")
        self.retry_after = retry_after


def retry_after_seconds(value: str | None, default: float = 1.0) -> float:
    """``Retry-After`` as seconds: a number, or an HTTP date."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _backoff(exc: Exception) -> bool | float:
    """stamina's hook: wait what Slack asked for, else back off as usual."""
    if isinstance(exc, SlackRateLimited):
        return exc.retry_after
    return isinstance(exc, TransientError)


class SlackWebhooks:
    def __init__(
        self,
        http: httpx.AsyncClient,
        secrets: SecretStore,
        retry: RetryPolicy,
        max_retry_after: float = 60.0,
    ) -> None:
        self._http = http
        self._secrets = secrets
        self._retry = retry
        self._max_retry_after = max_retry_after

    async def post(self, webhook: SecretRef, message: SlackMessage, channel: str) -> None:
        """Post ``message`` to the webhook whose URL is in secret ``webhook``.

        Raises ``TransientError`` when Slack stays unreachable, ``RetryLater``
        when it asks for a long pause, ``PermanentError`` when it refuses the
        message or the webhook is gone, ``Misconfigured`` for a bad secret.
        """
        secret = await self._secrets.get(webhook.secret, WebhookSecret)
        url = secret.url.get_secret_value()

        async def once() -> None:
            await self._post_once(url, message)

        await self._retry.call(once, on=_backoff)
        log.info("slack.posted", channel=channel, chars=len(message.get("text", "")))

    async def _post_once(self, url: str, message: SlackMessage) -> None:
        try:
            response = await self._http.post(url, json=message)
        except httpx.HTTPError as exc:
            # The exception's text may contain the URL: only its kind is reported.
            raise TransientError(f"Slack webhook unreachable ({type(exc).__name__})") from None
        status = response.status_code
        if status == 429:
            delay = retry_after_seconds(response.headers.get("Retry-After"))
            log.warning("slack.rate_limited", retry_after=delay)
            if delay > self._max_retry_after:
                raise RetryLater(math.ceil(delay), "Slack rate limit")
            raise SlackRateLimited(delay)
        if status >= 500:
            raise TransientError(f"Slack answered {status}")
        if status >= 400:
            raise PermanentError(f"Slack refused the message: {status} {response.text[:200]}")
