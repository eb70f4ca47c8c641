"""Signing in with an API key and out again.

The sign-in form has its own CSRF nonce, in a signed pre-session cookie, so
another site cannot sign a browser in under its own key. A successful
sign-in makes a fresh session (new nonce), so nothing set before it carries
over."""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import RedirectResponse

from conveyor_api.web.access import (
    CsrfRefused,
    Ctx,
    FormViewer,
    Signer,
    WebRoute,
    clear_cookie,
    set_cookie,
)
from conveyor_api.web.render import render
from conveyor_api.web.session import PRESESSION_COOKIE, SESSION_COOKIE, Session, new_nonce

log = structlog.get_logger("conveyor.web")

router = APIRouter(route_class=WebRoute)


def safe_next(target: str | None) -> str:
    """Only a path of this page: never another site (an open redirect)."""
    if target and target.startswith("/web/") and not target.startswith("/web//"):
        return target
    return "/web/"


def _form(
    request: Request, signer: Signer, next_url: str, error: str | None, status: int
) -> Response:
    nonce = signer.load_presession(request.cookies.get(PRESESSION_COOKIE)) or new_nonce()
    context: dict[str, Any] = {
        "session": None,
        "csrf_token": signer.csrf_token(nonce),
        "next": safe_next(next_url),
        "error": error,
    }
    response = render(request, "sign_in.html", context, status_code=status)
    set_cookie(
        response,
        request,
        PRESESSION_COOKIE,
        signer.dump_presession(nonce),
        signer.csrf_max_age_seconds,
    )
    return response


@router.get("/sign-in", name="web_sign_in")
async def sign_in_page(request: Request, signer: Signer, next: str = "/web/") -> Response:
    if signer.load(request.cookies.get(SESSION_COOKIE)) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _form(request, signer, next, None, 200)


@router.post("/sign-in")
async def sign_in(
    request: Request,
    ctx: Ctx,
    signer: Signer,
    api_key: Annotated[str, Form(max_length=500)] = "",
    csrf_token: Annotated[str, Form(max_length=500)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/web/",
) -> Response:
    nonce = signer.load_presession(request.cookies.get(PRESESSION_COOKIE))
    if not signer.csrf_valid(csrf_token, nonce):
        raise CsrfRefused
    caller = await ctx.keys.identify(api_key.strip()) if api_key.strip() else None
    if caller is None:
        log.info("web.sign_in_refused")
        return _form(
            request, signer, next, "That API key is not known. Check it and try again.", 401
        )
    session = Session(
        key_id=caller.key_id,
        principal=caller.principal,
        role=caller.role.value,
        csrf_nonce=new_nonce(),
    )
    response = RedirectResponse(safe_next(next), status_code=303)
    set_cookie(response, request, SESSION_COOKIE, signer.dump(session), signer.max_age_seconds)
    clear_cookie(response, PRESESSION_COOKIE)
    log.info("web.signed_in", by=caller.key_id, role=caller.role.value)
    return response


@router.post("/sign-out", name="web_sign_out")
async def sign_out(who: FormViewer) -> Response:
    response = RedirectResponse("/web/sign-in", status_code=303)
    clear_cookie(response, SESSION_COOKIE)
    log.info("web.signed_out", by=who.caller.key_id)
    return response
