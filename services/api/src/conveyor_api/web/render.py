"""Jinja2 templates (autoescaped) and the few filters pages share.

Times are rendered as ``<time datetime="UTC ISO">… UTC</time>``: a few lines
of JavaScript (``static/local-time.js``) show them in the viewer's time zone,
and without JavaScript the UTC text stays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from conveyor_shared.ledger.dynamo import parse_iso

HERE = Path(__file__).parent
STATIC = HERE / "static"

_STATUS_TEXT = {
    "success": "Delivered",
    "fail": "Failed",
    "failed": "Attempt failed",
    "processing": "On its way",
}


def utc_text(iso: str) -> str:
    try:
        return f"{parse_iso(iso):%Y-%m-%d %H:%M} UTC"
    except ValueError:
        return iso


def status_text(status: str) -> str:
    return _STATUS_TEXT.get(str(status), str(status))


def size_text(size: int | None) -> str:
    if size is None:
        return "unknown"
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} bytes"


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes = int(seconds // 60)
    if minutes < 1:
        return "under a minute"
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} days"


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(
    utc_text=utc_text, status_text=status_text, size_text=size_text, age_text=age_text
)


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    # Pages show ledger state and a CSRF token: never cached, never framed. No
    # form-action limit: a download's form is answered by a redirect to S3.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["Referrer-Policy"] = "same-origin"
    return response
