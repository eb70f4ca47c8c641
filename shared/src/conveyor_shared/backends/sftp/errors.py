"""asyncssh's and the socket's failures, translated at the edge into
``conveyor_shared.errors``; messages never carry a password or key."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import asyncssh

from conveyor_shared.backends.sftp.server import SftpServer
from conveyor_shared.errors import (
    AlreadyExists,
    ConveyorError,
    CredentialsRefused,
    Misconfigured,
    NotFound,
    PermanentError,
    TransientError,
)


class RemoteDirectoryMissing(NotFound, Misconfigured):
    """The destination directory does not exist and may not be created.

    A ``NotFound`` as the ``Destination`` protocol promises, and a
    ``Misconfigured`` (so permanent): retrying cannot create the directory.
    """


def translate(exc: BaseException, what: str, server: SftpServer) -> ConveyorError:
    """Map an asyncssh or socket failure to Conveyor's error hierarchy.

    Messages use asyncssh's reason strings, which never contain credentials.
    """
    reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
    if isinstance(exc, asyncssh.SFTPNoSuchFile | asyncssh.SFTPNoSuchPath):
        return NotFound(f"{what}: no such file or directory")
    if isinstance(exc, asyncssh.SFTPFileAlreadyExists):
        return AlreadyExists(f"{what}: already exists")
    if isinstance(exc, asyncssh.SFTPPermissionDenied):
        return PermanentError(f"{what}: permission denied by the server ({reason})")
    if isinstance(exc, asyncssh.SFTPOpUnsupported):
        return PermanentError(f"{what}: not supported by the server ({reason})")
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return PermanentError(
            f"{what}: the host key of {server.address} is not one of the route's host_keys"
        )
    if isinstance(exc, asyncssh.KeyExchangeFailed):
        return PermanentError(
            f"{what}: no agreement with {server.address} on host key type or cipher ({reason})"
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        return CredentialsRefused(
            f"{what}: {server.address} refused the credentials for user {server.username!r}"
        )
    if isinstance(exc, asyncssh.IllegalUserName | asyncssh.ProtocolNotSupported):
        return PermanentError(f"{what}: {reason}")
    return TransientError(f"{what}: {type(exc).__name__}: {reason}")


@contextlib.contextmanager
def translated(what: str, server: SftpServer) -> Iterator[None]:
    try:
        yield
    except (asyncssh.Error, OSError, EOFError) as exc:
        raise translate(exc, what, server) from exc
