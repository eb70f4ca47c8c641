"""How GCS's answers and aiohttp's failures become ``conveyor_shared.errors``;
no message carries a token or a session URI."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from conveyor_shared.errors import (
    ConveyorError,
    CredentialsRefused,
    Misconfigured,
    NotFound,
    PermanentError,
    TransientError,
)

_URL = re.compile(r"https?://\S+")


class SessionLost(TransientError):
    """The upload session expired, or it and we disagree on how much it holds:
    only a new upload can help (``copy()``'s caller retries it)."""


def bucket_missing(what: str, detail: str) -> ConveyorError:
    return Misconfigured(f"{what}: the bucket does not exist ({detail})")


def session_expired(what: str, detail: str) -> ConveyorError:
    return SessionLost(f"{what}: the upload session expired ({detail})")


def session_out_of_step(what: str, detail: str) -> ConveyorError:
    return SessionLost(f"{what}: GCS refused the chunk's offset or size ({detail})")


#: What a status means for one kind of request, where that differs from the default.
Meanings = Mapping[int, Callable[[str, str], ConveyorError]]
OBJECT: Meanings = {404: lambda what, detail: NotFound(f"{what}: no such object ({detail})")}
BUCKET: Meanings = {404: bucket_missing}
SESSION: Meanings = {400: session_out_of_step, 404: session_expired, 410: session_expired}


def status_error(status: int, message: str, what: str, meanings: Meanings) -> ConveyorError:
    """Map an HTTP status from GCS to Conveyor's errors: 401/403 permanent;
    408, 429, 5xx transient; a 404 naming the bucket, misconfigured; what
    ``meanings`` says for this request; anything else permanent."""
    detail = f"HTTP {status}" + (f": {message}" if message else "")
    if status == 401:
        return CredentialsRefused(f"{what}: the credentials were refused ({detail})")
    if status == 403:
        return PermanentError(f"{what}: permission denied ({detail})")
    if status == 404 and "bucket does not exist" in message.lower():
        return bucket_missing(what, detail)
    if status in meanings:
        return meanings[status](what, detail)
    if status in (408, 429) or status >= 500:
        return TransientError(f"{what}: {detail}")
    return PermanentError(f"{what}: GCS refused the request ({detail})")


def safe_text(exc: BaseException) -> str:
    """An exception's text without URLs (aiohttp puts the session URI in some)."""
    text = _URL.sub("<url>", str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
