"""The ``conveyor`` commands' way to the status and resend API: httpx, the key
from ``CONVEYOR_API_KEY``, problem responses turned into exit codes.

Exit codes: 0 done; 1 refused as the thing stands (409, e.g. a file in
flight); 2 no such thing, or a bad request (400, 404, 422); 3 no key, or the
key may not do this (401, 403); 4 the API could not be reached or failed (5xx).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import stamina

EXIT_CONFLICT = 1
EXIT_NOT_FOUND = 2
EXIT_DENIED = 3
EXIT_UNAVAILABLE = 4

_EXIT_BY_STATUS = {400: 2, 401: 3, 403: 3, 404: 2, 409: 1, 422: 2}


class ApiError(Exception):
    """The API said no, or could not be reached; ``exit_code`` says which."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        problem = response.json()
        message = f"{problem.get('title', 'error')}: {problem.get('detail') or ''}".rstrip(": ")
    except ValueError:
        message = response.text[:200] or response.reason_phrase
    code = _EXIT_BY_STATUS.get(response.status_code, EXIT_UNAVAILABLE)
    raise ApiError(f"{response.status_code} {message}", code)


@dataclass
class ApiClient:
    url: str
    key: str | None
    timeout: float = 60.0

    def _client(self) -> httpx.Client:
        headers = {"X-API-Key": self.key} if self.key else {}
        return httpx.Client(base_url=self.url.rstrip("/"), headers=headers, timeout=self.timeout)

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.get_response(path, params).json()

    def get_response(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            with self._client() as client:
                response = client.get(path, params=clean)
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach the API at {self.url}: {exc}", EXIT_UNAVAILABLE) from None
        _raise_for(response)
        return response

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST with one ``Idempotency-Key`` for every retry of this call, so a
        request retried after a dropped connection acts once."""
        key = uuid.uuid4().hex
        try:
            response = self._post_retrying(path, body or {}, key)
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach the API at {self.url}: {exc}", EXIT_UNAVAILABLE) from None
        _raise_for(response)
        return response.json()

    @stamina.retry(on=httpx.TransportError, attempts=3, timeout=None)
    def _post_retrying(self, path: str, body: dict[str, Any], key: str) -> httpx.Response:
        with self._client() as client:
            return client.post(path, json=body, headers={"Idempotency-Key": key})
