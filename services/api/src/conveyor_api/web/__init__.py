"""The web page for operators and the care team (S6): server-rendered, plain
forms, signed-in with an API key; ``router`` is included by the API's app."""

from fastapi import APIRouter

from conveyor_api.web import care_team, operators, sign_in, static_files

router = APIRouter(prefix="/web", include_in_schema=False)
for _module in (sign_in, operators, care_team, static_files):
    router.include_router(_module.router)

__all__ = ["router"]
