"""SFTP as a Source and a Destination (D6, D7; docs/transfer-sftp.md).

* An upload goes to ``.conveyor-<sha1(name)[:16]>-<random token>.part`` in
  the file's own directory, then is renamed into place by ``commit()``: with
  the OpenSSH ``posix-rename@openssh.com`` extension (atomic, replaces an
  existing file) where the server offers it, else with a plain rename,
  removing an existing file first if the server refuses to rename over it.
  In that fallback the final name is briefly absent, never partial. The
  temporary name is fixed in length (a 255-byte final name still fits) and
  unique to the upload, so two replicas uploading the same path never share
  one. What crashed workers left (temporary files untouched for
  ``orphan_age``, by the server's clock) is removed when an upload begins in
  that directory, at most once per ``orphan_age``.
* Writes are pipelined: chunks are cut into blocks of at most 255 KiB (what
  OpenSSH accepts) and up to ``requests_in_flight`` write requests are
  outstanding at increasing offsets. Memory is bounded by that window, not by
  the file's size.
* Before the rename, ``commit()`` compares the temporary file's size and,
  where the route asks for it, its ``md5sum`` (run over an SSH exec channel,
  as rclone does) with the hash ``copy()`` expects: a mismatch removes the
  temporary file, so nothing wrong ever appears under the final name. The
  first upload asks the server once (on its new, empty temporary file)
  whether it runs ``md5sum``; where it does, every upload assures MD5
  (``SftpUpload.assured_hashes``) and ``copy()`` does not hash the stream
  itself. A server that allows no commands is asked again only after
  ``checksum_retry_seconds``.
* The server's host key is pinned from the route's ``host_keys``; a key not
  listed there is a ``PermanentError`` naming host:port, never trusted on
  first use.
* Connections are pooled per server, user, credentials and pinned keys, at
  most ``max_sessions`` at once (each SSH connection carries one SFTP
  session), reused across files, and replaced when they drop.
* As a Source, ``list`` walks the directory tree (temporary names, links
  and devices left out), ``stat`` adds the server's ``md5sum`` of the file
  where the store verifies checksums and the server runs commands, and
  ``open`` streams 1 MiB reads over one pooled session.
* asyncssh's exceptions are translated here; callers see only
  ``conveyor_shared.errors``. No error message or log line carries a
  password or key.
"""

from conveyor_shared.backends.sftp.connection import Session, SftpConnectionPool
from conveyor_shared.backends.sftp.errors import RemoteDirectoryMissing
from conveyor_shared.backends.sftp.factory import SftpDestinationFactory
from conveyor_shared.backends.sftp.server import MAX_BLOCK, SftpServer, SftpTuning
from conveyor_shared.backends.sftp.store import SftpStore
from conveyor_shared.backends.sftp.upload import SftpUpload
from conveyor_shared.backends.temporary import is_temporary_name, temporary_name

__all__ = [
    "MAX_BLOCK",
    "RemoteDirectoryMissing",
    "Session",
    "SftpConnectionPool",
    "SftpDestinationFactory",
    "SftpServer",
    "SftpStore",
    "SftpTuning",
    "SftpUpload",
    "is_temporary_name",
    "temporary_name",
]
