"""The local stack's API keys: an operator key and a read-only key, made
fresh on every ``conveyor dev up``. Secrets Manager (moto) holds only their
SHA-256 hashes, as in production; the keys themselves are printed once and
kept in the state directory (owner-only) for ``conveyor dev env``."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LocalKeys:
    operator: str
    read_only: str


def api_keys_secret(stack: str) -> str:
    return f"{stack}/api-keys"


def web_session_secret(stack: str) -> str:
    return f"{stack}/web-session"


def _new_key() -> str:
    return "cvy_" + secrets.token_urlsafe(32)


def create_local_keys(secretsmanager: Any, stack: str, keep: Path) -> LocalKeys:
    """Create both keys' secret (hashes only) and the web page's signing key."""
    keys = LocalKeys(operator=_new_key(), read_only=_new_key())
    stored = [
        {"id": "local-operator", "role": "operate", "sha256": _sha256(keys.operator)},
        {"id": "local-read-only", "role": "read", "sha256": _sha256(keys.read_only)},
    ]
    secretsmanager.create_secret(
        Name=api_keys_secret(stack), SecretString=json.dumps({"keys": stored})
    )
    secretsmanager.create_secret(
        Name=web_session_secret(stack),
        SecretString=json.dumps({"keys": [secrets.token_urlsafe(32)]}),
    )
    keep.touch(mode=0o600)
    keep.write_text(json.dumps(asdict(keys)))
    return keys


def read_local_keys(keep: Path) -> LocalKeys:
    return LocalKeys(**json.loads(keep.read_text()))


def _sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
