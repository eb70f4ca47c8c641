"""The page's own stylesheet and script, served from the package (no CDN)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import FileResponse

from conveyor_api.web.render import STATIC

router = APIRouter()

_TYPES = {"conveyor.css": "text/css", "local-time.js": "text/javascript"}


@router.get("/static/{name}", name="web_static")
async def static_file(name: Literal["conveyor.css", "local-time.js"]) -> FileResponse:
    # A fixed list of names: nothing else under the package can be asked for.
    return FileResponse(
        STATIC / name, media_type=_TYPES[name], headers={"Cache-Control": "max-age=3600"}
    )
