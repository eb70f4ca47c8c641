"""FTP replies and what they mean for Conveyor: transient (421, 425, 426,
450, 451, 452 and every other 4xx, and vsftpd's ``500 OOPS``), permanent (530
refused login, 550, 553, every other 5xx), not found (550 where a path was looked up). Every error
names the server's reply, never a password."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor_shared.errors import (
    ConveyorError,
    CredentialsRefused,
    NotFound,
    PermanentError,
    TransientError,
)


@dataclass(frozen=True)
class Reply:
    code: int
    #: Every line's text after the code, multi-line replies in order.
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(line.strip(" -") for line in self.lines if line.strip(" -")).strip()

    @property
    def preliminary(self) -> bool:
        return 100 <= self.code < 200

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400

    def __str__(self) -> str:
        return f"{self.code} {self.text}"[:300]


class ServerPathMissing(NotFound, PermanentError):
    """A 550 for a path that was looked up: gone, or never there."""


def reply_error(reply: Reply, what: str, *, path_lookup: bool = False) -> ConveyorError:
    """The error for an unexpected ``reply`` to ``what``.

    ``path_lookup``: the command only looked ``what``'s path up (SIZE, MDTM,
    RETR, a listing), so a 550 means the path is missing rather than refused.
    """
    message = f"{what}: the server replied {reply}"
    if reply.code == 530:
        return CredentialsRefused(message)
    if 400 <= reply.code < 500 or reply.text.startswith("OOPS:"):
        # vsftpd's "500 OOPS: ..." is its session process dying (seen when its
        # passive port range ran out under load), not a refusal: a new session works.
        return TransientError(message)
    if reply.code == 550 and path_lookup:
        return ServerPathMissing(message)
    if reply.code >= 500:
        return PermanentError(message)
    return TransientError(f"{what}: unexpected reply {reply}")


def expect(reply: Reply, what: str, *, path_lookup: bool = False) -> Reply:
    """``reply`` if it is a success (2xx or 3xx), else its error raised."""
    if not reply.ok:
        raise reply_error(reply, what, path_lookup=path_lookup)
    return reply
