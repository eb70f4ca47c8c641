"""Serving an action under an ``Idempotency-Key``: the first response is kept
(``records.IdempotencyRecords``) and a retried request gets it back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from conveyor_api.auth import Caller
from conveyor_api.context import ApiContext
from conveyor_api.problems import ProblemError
from conveyor_api.records import IdempotencyRecords

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Makes a retried request return the first one's response",
    ),
]


async def idempotent(
    ctx: ApiContext,
    caller: Caller,
    request: Request,
    key: str | None,
    body: BaseModel | None,
    action: Callable[[], Awaitable[BaseModel]],
) -> Response:
    """Run ``action`` once per key; a retry with the same key and request returns
    the stored response, with the same key and another request a 422."""
    if key is None:
        return _json(await action())
    records = IdempotencyRecords(ctx)
    payload: Any = body.model_dump(mode="json") if body is not None else None
    fingerprint = records.fingerprint(request.method, request.url.path, payload)
    stored = await records.claim(caller, key, fingerprint)
    if stored is not None:
        return _replay(stored, fingerprint)
    try:
        result = await action()
    except Exception:
        # Nothing to replay: a retry runs again (every action is safe to repeat).
        await records.abandon(caller, key)
        raise
    text = result.model_dump_json(by_alias=True)
    await records.complete(caller, key, 200, text)
    return Response(text, media_type="application/json")


def _json(result: BaseModel) -> JSONResponse:
    return JSONResponse(result.model_dump(mode="json", by_alias=True))


def _replay(stored: dict[str, Any], fingerprint: str) -> Response:
    if stored.get("fingerprint") not in (None, fingerprint):
        raise ProblemError(
            422, "Idempotency-Key reused", "this key was used with a different request"
        )
    if stored.get("state") != "done":
        raise ProblemError(409, "In progress", "the first request with this key is still running")
    return Response(
        str(stored["responseBody"]),
        status_code=int(stored["responseStatus"]),
        media_type="application/json",
        headers={"Idempotent-Replayed": "true"},
    )
