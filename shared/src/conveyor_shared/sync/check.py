"""``conveyor source check ID`` and ``conveyor plan [ID]`` (S5, B3): what a
source's server says, and what the next poll would do (``plan_poll``, which
provider sync's poll runs too). Neither changes anything: no ledger write,
no message, no file touched. The API runs both, so they live here."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel

from conveyor_shared.config.sources import ProviderSource
from conveyor_shared.errors import ConveyorError, CredentialsRefused, NotFound
from conveyor_shared.ledger.received import PathState, PathStatus, ReceivedLedger
from conveyor_shared.sync.detect import Decision, Verdict, decide
from conveyor_shared.sync.remote import SourceOpener
from conveyor_shared.transfer.protocols import ObjectInfo


async def list_source(opener: SourceOpener, source: ProviderSource) -> list[ObjectInfo]:
    async with opener.open(source) as remote:
        return [info async for info in remote.list()]


async def known_states(ledger: ReceivedLedger, source_id: str) -> dict[str, PathState]:
    return {state.path: state async for state in ledger.states(source_id)}


def plan_poll(
    source: ProviderSource, listing: list[ObjectInfo], states: dict[str, PathState]
) -> tuple[list[Decision], list[PathState]]:
    """What a poll would do: a decision per listed file, and the known files
    that are gone. Pure: ``conveyor plan`` shows exactly this."""
    now = datetime.now(UTC)
    names = frozenset(info.path for info in listing)
    decisions = [decide(source, info, states.get(info.path), names, now) for info in listing]
    gone = [
        state
        for path, state in states.items()
        if path not in names and state.status is PathStatus.PRESENT and source.wants(path)
    ]
    return decisions, gone


Stage = Literal[
    "dns", "refused", "timeout", "tls", "host_key", "login", "permission", "directory", "listing"
]


class CheckReport(BaseModel):
    source_id: str
    ok: bool
    #: Where it failed, when it did.
    failed_at: Stage | None = None
    reason: str | None = None
    #: Files the listing showed (0 with ``ok`` and an ``empty`` note: nothing there).
    files: int = 0
    #: The first few files, for a person to recognise.
    sample: list[str] = []
    note: str | None = None


def _classify(exc: Exception) -> Stage:
    """Which step an error from the backend belongs to, from its class and
    the backend's own words (backends translate their SDK's errors)."""
    text = str(exc).lower()
    if isinstance(exc, CredentialsRefused):
        return "login"
    if isinstance(exc, NotFound):
        return "directory"
    for stage, words in (
        ("host_key", ("host key",)),
        ("tls", ("tls", "ssl", "certificate")),
        ("permission", ("permission", "denied", "550")),
        ("login", ("login", "authentication", "530")),
    ):
        if any(word in text for word in words):
            return stage  # type: ignore[return-value]
    return "listing"


async def _reachable(source: ProviderSource, within_seconds: float) -> CheckReport | None:
    """DNS, then a TCP connection: the failures a backend would blur."""
    port = source.server_port
    try:
        await asyncio.get_running_loop().getaddrinfo(source.host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return CheckReport(source_id=source.id, ok=False, failed_at="dns", reason=str(exc))
    try:
        async with asyncio.timeout(within_seconds):
            _, writer = await asyncio.open_connection(source.host, port)
    except TimeoutError:
        reason = f"no answer from {source.host}:{port} within {within_seconds:g} s"
        return CheckReport(source_id=source.id, ok=False, failed_at="timeout", reason=reason)
    except OSError as exc:
        reason = f"{source.host}:{port}: {exc.strerror or exc}"
        return CheckReport(source_id=source.id, ok=False, failed_at="refused", reason=reason)
    writer.close()
    return None


async def check_source(
    source: ProviderSource, opener: SourceOpener, *, within_seconds: float = 30.0
) -> CheckReport:
    """Connect, log in, list; report what was found or exactly why not."""
    unreachable = await _reachable(source, within_seconds)
    if unreachable is not None:
        return unreachable
    try:
        async with asyncio.timeout(within_seconds):
            listing = await list_source(opener, source)
    except TimeoutError:
        return CheckReport(
            source_id=source.id, ok=False, failed_at="timeout", reason="the listing timed out"
        )
    except ConveyorError as exc:
        return CheckReport(source_id=source.id, ok=False, failed_at=_classify(exc), reason=str(exc))
    wanted = sorted(info.path for info in listing if source.wants(info.path))
    return CheckReport(
        source_id=source.id,
        ok=True,
        files=len(wanted),
        sample=wanted[:10],
        note=None if wanted else "empty listing: no file matches the source's patterns",
    )


class PlannedFile(BaseModel):
    path: str
    action: Literal["copy", "skip"]
    verdict: Verdict
    reason: str
    size: int
    modified: str


class Plan(BaseModel):
    source_id: str
    listed: int
    files: list[PlannedFile]
    #: Known files no longer on the server: the poll marks them ``source_deleted``.
    gone: list[str]

    @property
    def to_copy(self) -> list[PlannedFile]:
        return [f for f in self.files if f.action == "copy"]


async def plan(
    sources: list[ProviderSource],
    ledger: ReceivedLedger,
    opener: SourceOpener,
    source_id: str | None = None,
) -> list[Plan]:
    """What the next poll of each source (or of ``source_id``) would copy,
    skip and why. Raises ``KeyError`` for an unknown ``source_id``."""
    chosen = [s for s in sources if source_id in (None, s.id)]
    if source_id is not None and not chosen:
        raise KeyError(f"no source {source_id!r} in the routes file")
    return list(await asyncio.gather(*(_plan_one(s, ledger, opener) for s in chosen)))


async def _plan_one(source: ProviderSource, ledger: ReceivedLedger, opener: SourceOpener) -> Plan:
    listing = await list_source(opener, source)
    decisions, gone = plan_poll(source, listing, await known_states(ledger, source.id))
    files = [
        PlannedFile(
            path=d.path,
            action="copy" if d.verdict is Verdict.FETCH else "skip",
            verdict=d.verdict,
            reason=d.reason,
            size=d.look.size,
            modified=d.look.modified,
        )
        for d in sorted(decisions, key=lambda d: d.path)
    ]
    return Plan(source_id=source.id, listed=len(listing), files=files, gone=[s.path for s in gone])
