"""The HTTP edge: one aiohttp session and one identity's token, every
failure translated."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
from gcloud.aio.auth import Token
from multidict import CIMultiDictProxy
from yarl import URL

from conveyor_shared.backends.gcs.errors import (
    OBJECT,
    Meanings,
    safe_text,
    status_error,
)
from conveyor_shared.errors import (
    Misconfigured,
    PermanentError,
    TransientError,
)
from conveyor_shared.transfer.protocols import ObjectInfo

KiB = 1024
MiB = 1024 * KiB
#: GCS accepts non-final chunks only in multiples of this.
CHUNK_QUANTUM = 256 * KiB
SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
#: No overall limit (a chunk takes as long as the source needs to supply it);
#: a silent server is a failure after ``sock_read`` seconds.
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=180)
#: Cancelling a session is a courtesy; it must not hold up a failing copy for long.
ABORT_TIMEOUT = aiohttp.ClientTimeout(total=30)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def resource(self, what: str) -> dict[str, Any]:
        try:
            value = json.loads(self.body)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise TransientError(f"{what}: GCS answered {self.status} without a JSON resource")
        return value

    @property
    def message(self) -> str:
        """GCS's own error message, if the body carries one."""
        with contextlib.suppress(ValueError, LookupError, TypeError):
            return str(json.loads(self.body)["error"]["message"])[:300]
        return ""


class GcsClient:
    """One shared aiohttp session plus the credentials for one identity.

    Every failure leaves here as a ``conveyor_shared.errors`` exception: callers
    never see aiohttp's, and no message carries a token or a session URI.
    """

    def __init__(self, session: aiohttp.ClientSession, api_root: str, token: Token | None) -> None:
        self.session = session
        self.api_root = api_root.rstrip("/")
        self._token = token

    async def _auth(self, what: str) -> dict[str, str]:
        if self._token is None:
            return {}
        try:
            token = await self._token.get()
        except aiohttp.ClientResponseError as exc:
            if exc.status in (400, 401, 403):
                raise PermanentError(
                    f"{what}: Google refused the service-account credentials (HTTP {exc.status})"
                ) from None
            raise TransientError(f"{what}: no access token (HTTP {exc.status})") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientError(f"{what}: no access token ({safe_text(exc)})") from None
        except Exception as exc:  # the key cannot sign: jwt and cryptography errors
            raise Misconfigured(
                f"{what}: the service-account key cannot be used ({type(exc).__name__})"
            ) from None
        return {"Authorization": f"Bearer {token}"}

    async def call(
        self,
        method: str,
        url: URL,
        what: str,
        *,
        ok: Collection[int] = (200,),
        meanings: Meanings = OBJECT,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Reply:
        """Send one request and read the (small) answer; raise unless its status is ``ok``."""
        sent = {**await self._auth(what), **(headers or {})}
        try:
            async with self.session.request(
                method, url, headers=sent, allow_redirects=False, **kwargs
            ) as response:
                reply = Reply(response.status, response.headers, await response.read())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientError(f"{what}: {safe_text(exc)}") from None
        if reply.status not in ok:
            raise status_error(reply.status, reply.message, what, meanings)
        return reply


def _b64_to_hex(value: str) -> str:
    return base64.b64decode(value, validate=True).hex()


def info_from_resource(path: str, resource: dict[str, Any], what: str) -> ObjectInfo:
    """An ``ObjectInfo`` from a GCS object resource; hashes as lower-case hex
    (``crc32c``: 8 digits, big-endian, as GCS encodes it)."""
    try:
        hashes = {
            name: _b64_to_hex(resource[field])
            for name, field in (("md5", "md5Hash"), ("crc32c", "crc32c"))
            if resource.get(field)
        }
        updated = resource.get("updated")
        return ObjectInfo(
            path=path,
            size=int(resource["size"]),
            modified=datetime.fromisoformat(updated) if updated else None,
            hashes=hashes,
            version=str(resource["generation"]) if resource.get("generation") else None,
        )
    except (KeyError, ValueError, binascii.Error) as exc:
        raise TransientError(f"{what}: unexpected object resource ({safe_text(exc)})") from None
