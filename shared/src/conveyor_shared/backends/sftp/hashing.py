"""File hashes computed by the server: ``md5sum`` (``sha1sum``,
``sha256sum``) over an SSH exec channel, as rclone does. What the server
answers (runs it, refuses, times out) is recorded on the pool, so uploads and
stats stop asking a server that refuses for ``checksum_retry_seconds``."""

from __future__ import annotations

import hashlib
import re
import shlex

import asyncssh

from conveyor_shared.backends.sftp.connection import Session, SftpConnectionPool
from conveyor_shared.backends.sftp.errors import translated

HASH_COMMANDS = {"md5": "md5sum", "sha1": "sha1sum", "sha256": "sha256sum"}
_HEX = re.compile(r"^[0-9a-f]+$")


async def hash_file(
    pool: SftpConnectionPool, session: Session, remote: str, algorithm: str, what: str
) -> str | None:
    """Hash ``remote`` with the server's ``md5sum`` over an exec channel.

    Returns None, logging it once per server, when the algorithm is not
    one of md5, sha1, sha256, the server refuses commands, the command
    fails or prints no checksum, or it runs past its timeout (a chrooted
    SFTP-only account is the usual case); the pool records which.
    """
    command = HASH_COMMANDS.get(algorithm)
    if command is None:
        return None
    with translated(what, pool.server):
        attrs = await session.sftp.stat(remote)
        absolute = await session.sftp.realpath(remote)
        timeout = pool.tuning.checksum_timeout + (attrs.size or 0) / (pool.tuning.checksum_rate)
        output = await _run(pool, session, f"{command} -- {shlex.quote(absolute)}", timeout)
    if output is None:
        return None
    digest = output.split(maxsplit=1)[0].lstrip("\\").lower() if output.strip() else ""
    if not _HEX.match(digest) or len(digest) != hashlib.new(algorithm).digest_size * 2:
        pool.checksum_outcome(False)
        pool.note_once("sftp.checksum_unavailable", command=command, output=output[:200])
        return None
    pool.checksum_outcome(True)
    return digest


async def _run(
    pool: SftpConnectionPool, session: Session, command: str, time_limit: float
) -> str | None:
    """The command's standard output, or None if the server will not run it."""
    program = command.split(maxsplit=1)[0]
    try:
        async with await session.conn.create_process(
            command, stdin=asyncssh.DEVNULL, encoding=None
        ) as process:
            result = await process.wait(check=False, timeout=time_limit)
    except asyncssh.ChannelOpenError as exc:
        pool.checksum_outcome(False)
        pool.note_once("sftp.checksum_unavailable", command=program, reason=exc.reason)
        return None
    except asyncssh.TimeoutError:
        pool.checksum_outcome(None)
        pool.log.warning("sftp.checksum_timed_out", command=program, seconds=time_limit)
        return None
    if result.exit_status != 0:
        pool.checksum_outcome(False)
        stderr = _text(result.stderr)
        pool.note_once(
            "sftp.checksum_unavailable",
            command=program,
            exit_status=result.exit_status,
            stderr=stderr[:200],
        )
        return None
    return _text(result.stdout)


def _text(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""
