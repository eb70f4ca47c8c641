"""One error model for every response that is not a success: RFC 9457
``application/problem+json``, including validation errors, 401, 403 and 404."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger("conveyor.api")

PROBLEM_TYPE = "application/problem+json"


class FieldProblem(BaseModel):
    #: Where in the request: ``query.limit``, ``body.reason``.
    field: str
    message: str


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int = Field(ge=400, le=599)
    detail: str | None = None
    #: Validation errors, one per field.
    errors: list[FieldProblem] | None = None


class ProblemError(Exception):
    """Raised by handlers and actions; becomes a ``Problem`` response."""

    def __init__(self, status: int, title: str, detail: str | None = None) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail


def not_found(what: str) -> ProblemError:
    return ProblemError(404, "Not found", f"no such {what}")


def conflict(detail: str) -> ProblemError:
    return ProblemError(409, "Conflict", detail)


def _problem_content(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


#: Responses every authenticated endpoint may give, for its OpenAPI entry.
COMMON_PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: _problem_content("The request cannot be served as asked"),
    401: _problem_content("No API key, or one that is not known"),
    403: _problem_content("The key's role does not allow this"),
    422: _problem_content("A parameter or the body is invalid"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _problem_content("Nothing by that id")}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: _problem_content("The thing is not in a state that allows this")
}


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=problem.status,
        media_type=PROBLEM_TYPE,
        headers=headers,
    )


async def _on_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(Problem(title=exc.title, status=exc.status, detail=exc.detail))


async def _on_http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    title = {401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed"}
    headers = {"WWW-Authenticate": "ApiKey"} if exc.status_code == 401 else None
    return problem_response(
        Problem(
            title=title.get(exc.status_code, "Error"),
            status=exc.status_code,
            detail=str(exc.detail),
        ),
        headers,
    )


async def _on_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        FieldProblem(field=".".join(str(p) for p in e.get("loc", ())), message=str(e.get("msg")))
        for e in exc.errors()
    ]
    return problem_response(
        Problem(title="Invalid request", status=422, detail="see errors", errors=errors)
    )


async def _on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
    # The detail stays in the log: an error text may carry a path or a host.
    log.exception("api.unexpected_error", error_type=type(exc).__name__)
    return problem_response(Problem(title="Internal error", status=500))


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(Exception, _on_unexpected)
