"""FTP and FTPS as a Source and a Destination (docs/transfer-ftp.md).

* Plain FTP, explicit FTPS (``AUTH TLS``, ``PBSZ 0``, ``PROT P``) and
  implicit FTPS; data connections resume the control connection's TLS
  session (vsftpd and proftpd require it). The certificate is checked
  against the system CAs, the secret's ``ca_bundle``, or a pinned SHA-256.
* EPSV first, PASV where the server lacks it, the PASV address ignored (the
  control host is used) unless ``trust_pasv_address``.
* At most ``max_sessions`` control connections per store, shared by listing
  and transfers; a session that failed is closed, never reused.
* Replies 421, 425, 426, 450, 451, 452 (any 4xx) are ``TransientError``; 530
  ``CredentialsRefused``; 550 ``NotFound`` where a path was looked up, else
  with 553 and any 5xx ``PermanentError``; the message quotes the reply.
* Listing: FEAT, then MLSD where offered, otherwise ``LIST -a`` parsed as
  Unix or DOS/IIS lines with each time's precision; lines that parse to
  nothing are an error, not an empty folder.
* Uploads stream to a unique temporary name and are renamed into place
  (``upload_mode``), after comparing SIZE and a server hash where offered.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from conveyor_shared.backends.ftp.settings import FtpCredentials, FtpSettings, UploadMode

if TYPE_CHECKING:
    from conveyor_shared.backends.ftp.store import (
        FtpStore,
        RemoteDirectoryMissing,
        open_ftp_store,
    )
    from conveyor_shared.backends.ftp.upload import FtpUpload

#: Imported on first use, so the routes file's FTP model (built on
#: ``settings``) loads in services installed without aioftp.
_NEEDS_AIOFTP = {
    "FtpStore": "store",
    "RemoteDirectoryMissing": "store",
    "open_ftp_store": "store",
    "FtpUpload": "upload",
}


def __getattr__(name: str) -> Any:
    if name not in _NEEDS_AIOFTP:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_NEEDS_AIOFTP[name]}"), name)


__all__ = [
    "FtpCredentials",
    "FtpSettings",
    "FtpStore",
    "FtpUpload",
    "RemoteDirectoryMissing",
    "UploadMode",
    "open_ftp_store",
]
