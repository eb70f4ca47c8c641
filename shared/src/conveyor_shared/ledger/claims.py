"""Holding something in DynamoDB: the one lease rule every claim follows.

A claim is a conditional write that records an owner token and an expiry
(epoch seconds) on an item. The item may be taken when it has no owner, when
its lease has run out, or by the same owner again (a renewal). Tokens are
made fresh for every claim (``new_owner``), never reused from an SQS
message id: a message redelivered while its first receiver is still working
(stalled, paused, slow) must not share that receiver's claim.

The files ledger (a transfer's lease), the scan lease and the notifier's
once-only records all build their conditions from ``Lease``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from conveyor_shared.ledger.dynamo import epoch


def new_owner(prefix: str = "") -> str:
    """A token naming one claim, unique across processes and replicas."""
    return f"{prefix}{secrets.token_hex(8)}"


@dataclass(frozen=True)
class Clause:
    """A piece of a DynamoDB expression with the names and values it binds."""

    text: str
    names: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    def __and__(self, other: Clause) -> Clause:
        return self._join("AND", other)

    def __or__(self, other: Clause) -> Clause:
        return self._join("OR", other)

    def _join(self, operator: str, other: Clause) -> Clause:
        return Clause(
            f"({self.text}) {operator} ({other.text})",
            {**self.names, **other.names},
            {**self.values, **other.values},
        )


@dataclass(frozen=True)
class Lease:
    """The attribute names of an item's lease."""

    owner: str = "leaseOwner"
    expires: str = "leaseExpires"

    @property
    def _names(self) -> dict[str, str]:
        return {"#leaseOwner": self.owner, "#leaseExpires": self.expires}

    def takeable_by(self, owner: str, now: int | None = None) -> Clause:
        """Free, expired, or already ``owner``'s."""
        return Clause(
            "attribute_not_exists(#leaseOwner) OR #leaseOwner = :leaseOwner "
            "OR #leaseExpires < :leaseNow",
            self._names,
            {":leaseOwner": owner, ":leaseNow": epoch() if now is None else now},
        )

    def free(self, now: int | None = None) -> Clause:
        """No owner, or a lease that has run out."""
        return Clause(
            "attribute_not_exists(#leaseOwner) OR #leaseExpires < :leaseNow",
            self._names,
            {":leaseNow": epoch() if now is None else now},
        )

    def held_by(self, owner: str) -> Clause:
        # DynamoDB refuses names an expression does not use: bind only the owner's.
        return Clause(
            "#leaseOwner = :leaseOwner", {"#leaseOwner": self.owner}, {":leaseOwner": owner}
        )

    def assign(self, owner: str, seconds: int) -> Clause:
        """The ``SET`` assignments that make ``owner`` the holder for ``seconds``."""
        return Clause(
            "#leaseOwner = :leaseOwner, #leaseExpires = :leaseExpires",
            self._names,
            {":leaseOwner": owner, ":leaseExpires": epoch() + seconds},
        )

    def extension(self, seconds: int) -> Clause:
        """The ``SET`` assignment that moves the expiry ``seconds`` from now."""
        return Clause(
            "#leaseExpires = :leaseExpires",
            {"#leaseExpires": self.expires},
            {":leaseExpires": epoch() + seconds},
        )

    def removal(self) -> Clause:
        """The ``REMOVE`` list that frees the lease."""
        return Clause("#leaseOwner, #leaseExpires", self._names)

    def seconds_left(self, item: dict[str, Any]) -> int:
        """How long the lease recorded in ``item`` (plain Python values) still runs."""
        expires = item.get(self.expires)
        return max(0, int(expires) - epoch()) if expires is not None else 0
