"""How provider sync reaches a partner's server: a ``Source`` per configured
provider source, opened by protocol."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Protocol, runtime_checkable

from conveyor_shared.backends.ftp import FtpSettings, FtpStore, open_ftp_store
from conveyor_shared.backends.sftp.factory import SftpDestinationFactory
from conveyor_shared.config.models import SftpDestination
from conveyor_shared.config.sources import ProviderSource, offset_text
from conveyor_shared.errors import CredentialsRefused, Misconfigured
from conveyor_shared.secrets import SecretStore
from conveyor_shared.transfer.protocols import Source


class SourceOpener(Protocol):
    def open(self, source: ProviderSource) -> AbstractAsyncContextManager[Source]:
        """A ``Source`` rooted at ``source.directory``, connected with the
        source's credentials, host key or certificate; closed on exit."""
        ...


@runtime_checkable
class Remover(Protocol):
    """A source that can remove a file (``after_copy: delete``)."""

    async def delete(self, path: str) -> None: ...


class ByProtocol:
    """Opens each source with the opener registered for its protocol."""

    def __init__(self, openers: Mapping[str, SourceOpener]) -> None:
        self._openers = dict(openers)

    def open(self, source: ProviderSource) -> AbstractAsyncContextManager[Source]:
        opener = self._openers.get(source.protocol)
        if opener is None:
            raise Misconfigured(
                f"source {source.id}: no {source.protocol} backend in this deployment "
                f"(available: {', '.join(sorted(self._openers)) or 'none'})"
            )
        return opener.open(source)


class SftpSources:
    """SFTP sources through the SFTP backend: one connection pool per server
    and account, shared by every poll and fetch of this process. Hashes are
    not asked of the server (``md5sum`` would read each file once more):
    provider sync computes SHA-256 while it copies."""

    def __init__(self, secrets: SecretStore) -> None:
        self._factory = SftpDestinationFactory(secrets)

    @contextlib.asynccontextmanager
    async def open(self, source: ProviderSource) -> AsyncIterator[Source]:
        spec = SftpDestination(
            type="sftp",
            host=source.host,
            port=source.server_port,
            username=source.username,
            directory=source.directory,
            host_keys=source.host_keys,
            credentials=source.credentials,
            max_sessions=source.max_sessions,
            verify_checksum=False,
        )
        yield await self._factory.open(spec)

    async def close(self) -> None:
        await self._factory.close()


class FtpSources:
    """FTP and FTPS sources through the FTP backend: one store (and its
    session pool, at most ``max_sessions``) per source, kept for the life of
    the process. The secret holds the password (and a private CA's
    ``ca_bundle``); the login name is the source's ``username``."""

    def __init__(self, secrets: SecretStore) -> None:
        self._secrets = secrets
        #: By the source's whole configuration: a changed source gets a new store.
        self._stores: dict[str, FtpStore] = {}
        self._opening = asyncio.Lock()

    @staticmethod
    def settings(source: ProviderSource) -> FtpSettings:
        options = source.ftp
        return FtpSettings(
            host=source.host,
            port=source.server_port,
            tls="none" if source.protocol == "ftp" else options.tls,
            fingerprint=source.certificate_sha256,
            directory=source.directory,
            passive=options.passive,
            trust_pasv_address=options.trust_pasv_address,
            max_sessions=source.max_sessions,
            connect_timeout=options.connect_timeout,
            io_timeout=options.io_timeout,
            idle_seconds=options.idle_seconds,
            time_zone=offset_text(source.zone),
        )

    async def _store(self, source: ProviderSource) -> FtpStore:
        key = source.model_dump_json()
        async with self._opening:
            if key not in self._stores:
                secret = await self._secrets.get_json(source.credentials.secret)
                login = {"username": source.username, **secret}
                self._stores[key] = await open_ftp_store(self.settings(source), login)
            return self._stores[key]

    @contextlib.asynccontextmanager
    async def open(self, source: ProviderSource) -> AsyncIterator[Source]:
        store = await self._store(source)
        try:
            yield store
        except CredentialsRefused:
            # The secret may have been rotated: the next try reads it again.
            self._stores.pop(source.model_dump_json(), None)
            self._secrets.forget()
            await store.close()
            raise

    async def close(self) -> None:
        stores, self._stores = list(self._stores.values()), {}
        await asyncio.gather(*(store.close() for store in stores))


async def installed_openers(stack: AsyncExitStack, secrets: SecretStore) -> dict[str, SourceOpener]:
    """The openers of every protocol this deployment reaches, closed with ``stack``."""
    sftp, ftp = SftpSources(secrets), FtpSources(secrets)
    stack.push_async_callback(sftp.close)
    stack.push_async_callback(ftp.close)
    return {"sftp": sftp, "ftp": ftp, "ftps": ftp}
