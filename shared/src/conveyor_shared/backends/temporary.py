"""The names uploads have before ``commit`` renames them into place, the same
for every backend that writes through a temporary file (SFTP, FTP)."""

from __future__ import annotations

import hashlib
import re
import secrets

#: Conveyor's temporary names, this version's and the older fixed ones.
_TEMPORARY = re.compile(r"^\.conveyor-[0-9a-f]{16}(-[0-9a-f]{12})?\.part$")


def temporary_name(name: str, token: str | None = None) -> str:
    """An upload's name before commit: fixed-length (a 255-byte final name
    still fits), and unique to the upload (``token``: 12 hex digits, random
    unless given), so two replicas writing one path never share one."""
    digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:16]
    return f".conveyor-{digest}-{token or secrets.token_hex(6)}.part"


def is_temporary_name(name: str) -> bool:
    return bool(_TEMPORARY.match(name))
