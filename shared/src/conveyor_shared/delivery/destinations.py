"""How a transfer service turns a route's destination settings into a
``Destination``, and where in it a picked-up file lands."""

from __future__ import annotations

from typing import Protocol

from conveyor_shared.config.models import DestinationConfig, Route
from conveyor_shared.transfer.protocols import Destination


class DestinationFactory(Protocol):
    """Opens destinations of one type, reusing connections across files."""

    async def open(self, spec: DestinationConfig) -> Destination:
        """A ready destination for ``spec``; raises ``Misconfigured`` if ``spec``
        is of another type or its secret is unusable, ``PermanentError`` if the
        server refuses the credentials or host key, ``TransientError`` if it
        cannot be reached."""
        ...

    async def forget_credentials(self) -> None:
        """Drop credentials and clients made from them, so the next ``open``
        reads each secret again (after a refused login)."""
        ...

    async def close(self) -> None:
        """Close every pooled connection."""
        ...


def destination_path(route: Route, key: str) -> str:
    """The file's path on the destination: its key relative to the pick-up,
    so sub-folders in the pick-up are kept."""
    if not key.startswith(route.pickup.prefix):
        raise ValueError(f"{key!r} is not under {route.pickup}")
    return key[len(route.pickup.prefix) :]
