"""The commands on provider sync's two queues, parsed in one place."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from conveyor_shared.ledger.received import Look
from conveyor_shared.messaging.envelopes import MalformedMessage


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PollRequested(_Message):
    """Poll one source, or (``source_id`` None, sent by the schedule) ask
    for a poll of every source whose schedule says it is due."""

    kind: Literal["sync.poll"] = "sync.poll"
    v: Literal[1] = 1
    source_id: str | None = None
    #: Poll even if the source's schedule says it is not due.
    force: bool = False
    reason: str = "schedule"


class FetchRequested(_Message):
    """Copy one remote file as the poll listed it."""

    kind: Literal["sync.fetch"] = "sync.fetch"
    v: Literal[1] = 1
    source_id: str
    path: str
    look: Look
    #: When this look was first listed: the version's first-seen time.
    looked_at: str


SyncCommand = Annotated[PollRequested | FetchRequested, Field(discriminator="kind")]
_COMMANDS: TypeAdapter[PollRequested | FetchRequested] = TypeAdapter(SyncCommand)


def parse_command(body: str) -> PollRequested | FetchRequested:
    try:
        return _COMMANDS.validate_json(body)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False)
        )
        raise MalformedMessage(f"not a provider-sync command: {reasons}") from None
