"""What every page's template gets, and links between pages."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Form, Query, Request

from conveyor_api.web.access import Viewer

#: A file, as a page's query string or a form names it: client and content id.
ClientInForm = Annotated[str, Form(min_length=1, max_length=100)]
IdInForm = Annotated[str, Form(min_length=1, max_length=1200)]
ClientInQuery = Annotated[str, Query(min_length=1, max_length=100)]
IdInQuery = Annotated[str, Query(min_length=1, max_length=1200)]


def page_context(who: Viewer, section: str) -> dict[str, Any]:
    return {"session": who.session, "csrf_token": who.csrf_token, "section": section}


def file_url(request: Request, client_id: str, content_id: str, **extra: str) -> str:
    url = request.url_for("web_file").include_query_params(client=client_id, id=content_id, **extra)
    return str(url)
