"""Validation of a routes file that names every bad field and says why.

Pydantic checks each field; this module adds what a single field cannot know
(duplicate clients and source ids, overlapping pick-ups and landings, inline
credentials) and turns every problem into a ``Problem(path, message)`` a
person can act on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from conveyor_shared.config.models import DESTINATION_TYPES, ClientId, RoutesFile, S3Location
from conveyor_shared.config.sources import SourceId

T = TypeVar("T")

#: Where the scanner moves a refused pick-up file, in the pick-up's own bucket
#: (``conveyor-quarantine/<original key>``); no pick-up may contain it.
QUARANTINE_PREFIX = "conveyor-quarantine/"

#: Keys that would put a credential into the file itself.
INLINE_SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "private_key",
        "passphrase",
        "secret_access_key",
        "access_key_id",
        "aws_secret_access_key",
        "session_token",
        "token",
        "api_key",
        "service_account",
        "service_account_json",
        "webhook_url",
        "key_file",
    }
)


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(Exception):
    """The routes file is invalid; ``problems`` lists every reason."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n{lines}")


def format_path(loc: Sequence[str | int]) -> str:
    path = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in DESTINATION_TYPES and index and loc[index - 1] == "destination":
            continue  # pydantic's discriminator tag, not a field of the file
        else:
            path += f".{part}" if path else part
    return path or "(file)"


def _inline_secrets(node: Any, loc: tuple[str | int, ...] = ()) -> Iterator[Problem]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            here = (*loc, key)
            if isinstance(key, str) and key.lower() in INLINE_SECRET_KEYS:
                yield Problem(
                    format_path(here),
                    "inline credential: store it in AWS Secrets Manager and refer to it "
                    "with 'credentials: {secret: NAME}'",
                )
            else:
                yield from _inline_secrets(value, here)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _inline_secrets(value, (*loc, index))


def _describe(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "missing field"
    if kind == "union_tag_invalid":
        return (
            f"unknown destination type {error['input'].get('type')!r}; "
            f"expected one of {', '.join(DESTINATION_TYPES)}"
        )
    if kind == "union_tag_not_found":
        return f"missing field 'type' (one of {', '.join(DESTINATION_TYPES)})"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _field_problems(raw: Any, inline: list[Problem]) -> tuple[RoutesFile | None, list[Problem]]:
    inline_paths = {p.path for p in inline}
    try:
        return RoutesFile.model_validate(raw), []
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            path = format_path(error["loc"])
            if path not in inline_paths:
                problems.append(Problem(path, _describe(error)))
        return None, problems


@dataclass(frozen=True)
class _RouteKeys:
    """The fields of one route that other routes are checked against; a field
    that is itself invalid is None (its own problem is reported already)."""

    index: int
    name: str | None
    client_id: str | None
    pickup: S3Location | None
    archive: S3Location | None


def _valid(adapter: TypeAdapter[T], value: Any) -> T | None:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


_NAME: TypeAdapter[str] = TypeAdapter(str)
_CLIENT_ID: TypeAdapter[str] = TypeAdapter(ClientId)
_LOCATION: TypeAdapter[S3Location] = TypeAdapter(S3Location)


def _route_keys(raw: Mapping[str, Any]) -> list[_RouteKeys]:
    """Each route's identifying fields, taken one field at a time: duplicates
    and overlaps are found even in a route that has field errors elsewhere."""
    routes = raw.get("routes")
    keys = []
    for index, item in enumerate(routes if isinstance(routes, list) else []):
        if not isinstance(item, Mapping):
            continue
        archive = item.get("archive")
        keys.append(
            _RouteKeys(
                index,
                _valid(_NAME, item.get("name")),
                _valid(_CLIENT_ID, item.get("client_id")),
                _valid(_LOCATION, item.get("pickup")),
                None if archive is None else _valid(_LOCATION, archive),
            )
        )
    return keys


def _pair_problems(route: _RouteKeys, other: _RouteKeys) -> Iterator[Problem]:
    i, j = route.index, other.index
    if route.client_id is not None and route.client_id == other.client_id:
        yield Problem(
            f"routes[{i}].client_id",
            f"duplicate client id {route.client_id!r} (also routes[{j}])",
        )
    if route.name is not None and route.name == other.name:
        yield Problem(f"routes[{i}].name", f"duplicate route name (also routes[{j}])")
    if route.pickup and other.pickup and route.pickup.overlaps(other.pickup):
        yield Problem(
            f"routes[{i}].pickup",
            f"{route.pickup} overlaps routes[{j}].pickup {other.pickup}: "
            "a file would belong to two clients",
        )
    for a, b in ((route, other), (other, route)):
        if a.archive and b.pickup and a.archive.overlaps(b.pickup):
            yield Problem(
                f"routes[{a.index}].archive",
                f"{a.archive} overlaps the pick-up of client {b.client_id or f'routes[{b.index}]'}",
            )


def _cross_route_problems(routes: list[_RouteKeys]) -> Iterator[Problem]:
    for position, route in enumerate(routes):
        if route.pickup and route.pickup.overlaps(
            S3Location(bucket=route.pickup.bucket, prefix=QUARANTINE_PREFIX)
        ):
            yield Problem(
                f"routes[{route.index}].pickup",
                f"{route.pickup} overlaps s3://{route.pickup.bucket}/{QUARANTINE_PREFIX}, "
                "where refused files are moved",
            )
        for other in routes[:position]:
            yield from _pair_problems(route, other)


@dataclass(frozen=True)
class _SourceKeys:
    """The fields of one provider source checked against other entries; a
    field that is itself invalid is None (its own problem is reported already)."""

    index: int
    id: str | None
    landing: S3Location | None


_SOURCE_ID: TypeAdapter[str] = TypeAdapter(SourceId)


def _source_keys(raw: Mapping[str, Any]) -> list[_SourceKeys]:
    sources = raw.get("sources")
    return [
        _SourceKeys(
            index, _valid(_SOURCE_ID, item.get("id")), _valid(_LOCATION, item.get("landing"))
        )
        for index, item in enumerate(sources if isinstance(sources, list) else [])
        if isinstance(item, Mapping)
    ]


def _cross_source_problems(
    sources: list[_SourceKeys], routes: list[_RouteKeys]
) -> Iterator[Problem]:
    for position, source in enumerate(sources):
        for other in sources[:position]:
            if source.id is not None and source.id == other.id:
                yield Problem(
                    f"sources[{source.index}].id",
                    f"duplicate source id {source.id!r} (also sources[{other.index}])",
                )
        for route in routes:
            if source.landing and route.pickup and source.landing.overlaps(route.pickup):
                # The scanner would take every landed copy for a client's file to deliver.
                yield Problem(
                    f"sources[{source.index}].landing",
                    f"{source.landing} overlaps routes[{route.index}].pickup {route.pickup}: "
                    "landed copies would be picked up and delivered",
                )


def _order(problem: Problem) -> tuple[tuple[int, str], ...]:
    """Problems sorted as the fields appear in the file (routes[2] before routes[10])."""
    parts = re.split(r"[.\[\]]+", problem.path)
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in parts if p)


def validate_routes(raw: Any, source: str = "routes file") -> RoutesFile:
    """Parse and check a routes document (already loaded from YAML).

    Raises ``ConfigError`` listing every problem, or returns the typed model.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(source, [Problem("(file)", "expected a mapping with a 'routes' list")])
    inline = list(_inline_secrets(raw))
    model, problems = _field_problems(raw, inline)
    routes = _route_keys(raw)
    problems = [
        *inline,
        *problems,
        *_cross_route_problems(routes),
        *_cross_source_problems(_source_keys(raw), routes),
    ]
    if problems:
        raise ConfigError(source, sorted(problems, key=_order))
    assert model is not None
    return model
