"""Every destination backend, by the ``type`` a route's destination is
written with: its settings model, how its transfer service opens it, and the
``conveyor-shared`` extra that installs its SDK.

This is where a destination type is added (docs/architecture.md, "Adding a
destination type"). A backend's module is imported only when its factory is
opened, so a service installed without another backend's extra (the SFTP
service has no GCS SDK) still imports everything it uses.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, cast

from pydantic import BaseModel

from conveyor_shared.config.models import (
    DESTINATION_TYPES,
    FtpDestination,
    GcsDestination,
    S3Destination,
    SftpDestination,
    type_name,
)
from conveyor_shared.errors import Misconfigured

if TYPE_CHECKING:
    from conveyor_shared.delivery.destinations import DestinationFactory
    from conveyor_shared.delivery.service import FactoryMaker
    from conveyor_shared.runtime import AwsClients
    from conveyor_shared.secrets import SecretStore
    from conveyor_shared.settings import ConveyorSettings

#: What a transfer service calls once at start-up to get its destinations.
FactoryOpener = Callable[
    ["ConveyorSettings", "AwsClients", "SecretStore", AsyncExitStack],
    Awaitable["DestinationFactory"],
]


@dataclass(frozen=True)
class Backend:
    #: The route's ``destination`` model; its ``type`` names the backend.
    config: type[BaseModel]
    #: ``module:function``, a ``FactoryOpener``; imported on first use.
    opener: str
    #: The ``conveyor-shared`` extra its SDK comes with (shared/pyproject.toml).
    extra: str

    @property
    def type(self) -> str:
        return type_name(self.config)

    def load(self) -> FactoryOpener:
        """Import the backend. Raises ``Misconfigured`` naming the extra to
        install when its SDK is missing."""
        module, _, function = self.opener.partition(":")
        try:
            loaded = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise Misconfigured(
                f"the {self.type} backend needs conveyor-shared[{self.extra}] "
                f"(module {exc.name!r} is not installed)"
            ) from None
        return cast(FactoryOpener, getattr(loaded, function))


BACKENDS: Mapping[str, Backend] = MappingProxyType(
    {
        backend.type: backend
        for backend in (
            Backend(GcsDestination, "conveyor_shared.backends.gcs.factory:open_factory", "gcs"),
            Backend(SftpDestination, "conveyor_shared.backends.sftp.factory:open_factory", "sftp"),
            Backend(S3Destination, "conveyor_shared.backends.s3:open_factory", "s3"),
            Backend(FtpDestination, "conveyor_shared.backends.ftp.factory:open_factory", "ftp"),
        )
    }
)

if tuple(BACKENDS) != DESTINATION_TYPES:  # the config union and this table must agree
    raise RuntimeError(
        f"backends {tuple(BACKENDS)} differ from the destination models {DESTINATION_TYPES}"
    )


def backend(kind: str) -> Backend:
    """The backend for destination type ``kind``; raises ``Misconfigured`` for an unknown one."""
    try:
        return BACKENDS[kind]
    except KeyError:
        raise Misconfigured(
            f"no destination type {kind!r} (one of {', '.join(BACKENDS)})"
        ) from None


def factory_maker(kind: str, settings: ConveyorSettings) -> FactoryMaker:
    """What ``run_transfer_service`` needs to open destinations of type ``kind``;
    raises ``Misconfigured`` as ``backend`` and ``Backend.load`` do."""
    opener = backend(kind).load()

    async def make(
        aws: AwsClients, secrets: SecretStore, stack: AsyncExitStack
    ) -> DestinationFactory:
        return await opener(settings, aws, secrets, stack)

    return make
