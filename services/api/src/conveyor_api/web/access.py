"""Who is looking at the page: the session cookie checked, the key it names
checked again against the key store on every request, and CSRF checked on
every form.

Pages raise ``SignInRequired``, ``CsrfRefused`` or the API's ``ProblemError``;
``WebRoute`` turns them into a redirect or an HTML page, so the browser never
sees a JSON problem.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

import structlog
from fastapi import Depends, Form, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, SecretStr

from conveyor_api.auth import Caller, Role
from conveyor_api.context import ApiContext, api_context
from conveyor_api.problems import ProblemError
from conveyor_api.web.render import render
from conveyor_api.web.session import (
    SESSION_COOKIE,
    Session,
    SessionSigner,
)
from conveyor_shared.errors import ConveyorError

COOKIE_PATH = "/web"

log = structlog.get_logger("conveyor.web")


class SigningKeys(BaseModel):
    """The secret that signs session cookies: the first key signs, all verify."""

    keys: list[SecretStr] = Field(min_length=1)


class SignInRequired(Exception):
    """No valid session: the browser is sent to the sign-in page."""


class CsrfRefused(Exception):
    """A form arrived without the token its page was given."""


async def session_signer(request: Request) -> SessionSigner:
    ctx = api_context(request)
    name = ctx.settings.web_session_secret
    if not name:
        raise ProblemError(503, "Sign-in is not set up", "CONVEYOR_WEB_SESSION_SECRET is not set")
    lifetime = ctx.settings.web_session_seconds
    try:
        keys = [k.get_secret_value() for k in (await ctx.secrets.get(name, SigningKeys)).keys]
        return SessionSigner(keys, max_age_seconds=lifetime, csrf_max_age_seconds=lifetime)
    except (ConveyorError, ValueError) as exc:
        # The reason goes to the log, not the page: it names the secret.
        log.error("web.session_secret_unusable", error=str(exc))
        raise ProblemError(503, "Sign-in is not available", "ask an administrator") from None


Signer = Annotated[SessionSigner, Depends(session_signer)]


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    """HttpOnly (no script reads it), SameSite=Strict (no other site's page
    sends it), Secure outside local and test, and an expiry that matches the
    signature's own age limit."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=api_context(request).settings.environment == "production",
    )


def clear_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="strict")


@dataclass(frozen=True)
class Viewer:
    """A signed-in person: their session and the key's current role."""

    session: Session
    caller: Caller
    csrf_token: str

    def may(self, role: Role) -> bool:
        return self.caller.role.allows(role)

    @property
    def may_operate(self) -> bool:
        return self.may(Role.OPERATE)


async def viewer(request: Request, signer: Signer) -> Viewer:
    session = signer.load(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise SignInRequired
    # The key may have been revoked or its role changed since sign-in.
    caller = await api_context(request).keys.by_id(session.key_id)
    if caller is None:
        raise SignInRequired
    return Viewer(session, caller, signer.csrf_token(session.csrf_nonce))


SignedIn = Annotated[Viewer, Depends(viewer)]
Ctx = Annotated[ApiContext, Depends(api_context)]


async def checked_form(
    request: Request, signer: Signer, csrf_token: Annotated[str, Form()] = ""
) -> Viewer:
    """A signed-in viewer whose form carried this session's CSRF token."""
    who = await viewer(request, signer)
    if not signer.csrf_valid(csrf_token, who.session.csrf_nonce):
        raise CsrfRefused
    return who


FormViewer = Annotated[Viewer, Depends(checked_form)]


def operator(who: Viewer) -> Viewer:
    if not who.may(Role.OPERATE):
        raise ProblemError(403, "Not allowed", "resending needs a key with the operate role")
    return who


class WebRoute(APIRoute):
    """Turns the page's exceptions into what a browser should get."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                return _to_sign_in(request)
            except CsrfRefused:
                return _error_page(request, 403, "This form has expired", _CSRF_TEXT)
            except ProblemError as exc:
                return _error_page(request, exc.status, exc.title, exc.detail or "")

        return handle


_CSRF_TEXT = (
    "The form was not sent from this site's page, or the page was open too long. "
    "Go back, reload the page and try again."
)


def _to_sign_in(request: Request) -> RedirectResponse:
    target = request.url.path if request.method == "GET" else "/web/"
    if request.method == "GET" and request.url.query:
        target += "?" + request.url.query
    response = RedirectResponse(f"/web/sign-in?next={quote(target, safe='')}", status_code=303)
    clear_cookie(response, SESSION_COOKIE)
    return response


def _error_page(request: Request, status: int, title: str, detail: str) -> Response:
    context: dict[str, Any] = {"title": title, "detail": detail, "session": None}
    return render(request, "error.html", context, status_code=status)
