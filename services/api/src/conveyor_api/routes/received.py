"""Files received from provider sources, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from conveyor_api.auth import Reader
from conveyor_api.context import Context
from conveyor_api.models import ReceivedPage
from conveyor_api.problems import COMMON_PROBLEMS, NOT_FOUND
from conveyor_api.received import ReceivedQuery, list_received

router = APIRouter(prefix="/received", tags=["received"], responses=COMMON_PROBLEMS)


@router.get("", response_model=ReceivedPage, responses=NOT_FOUND, summary="Files received")
async def get_received(
    ctx: Context,
    _who: Reader,
    source: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    name: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(min_length=1, max_length=4000)] = None,
) -> ReceivedPage:
    """Every version provider sync stored, of one ``source`` or of all, newest
    first; ``name`` is part of the remote path; ``nextCursor`` fetches the
    next page."""
    return await list_received(ctx, ReceivedQuery(source, name, limit, cursor))
