"""API keys with roles (``read`` < ``operate`` < ``admin``).

Keys are stored only as SHA-256 hashes, in a Secrets Manager secret named by
``CONVEYOR_API_KEYS_SECRET``::

    {"keys": [{"id": "ops-alice", "role": "operate", "sha256": "<hex>"}]}

A caller sends its key as ``X-API-Key: <key>`` (or ``Authorization: Bearer
<key>``). The key itself is never logged, stored or echoed; a caller is known
by the key's ``id``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from conveyor_api.problems import ProblemError
from conveyor_shared.secrets import SecretStore


class Role(StrEnum):
    READ = "read"
    OPERATE = "operate"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


class StoredKey(BaseModel):
    id: str = Field(min_length=1, max_length=100)
    role: Role
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    #: Who holds the key (a person or a system), shown and recorded; the id if absent.
    principal: str | None = Field(default=None, max_length=200)


class StoredKeys(BaseModel):
    keys: list[StoredKey]


class Caller(BaseModel):
    """Who is asking: the key's id and role."""

    key_id: str
    principal: str
    role: Role


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh key: 32 random bytes, URL-safe, with a prefix that secret scanners know."""
    return "cvy_" + secrets.token_urlsafe(32)


def stored_keys(keys: dict[str, tuple[Role, str]]) -> dict[str, Any]:
    """The secret's JSON for ``{id: (role, key)}``: hashes only."""
    return StoredKeys(
        keys=[StoredKey(id=i, role=role, sha256=hash_key(k)) for i, (role, k) in keys.items()]
    ).model_dump(mode="json")


class KeyRing:
    """Recognises keys against the hashes in the secret (cached, so a revoked
    key stops working within the cache time)."""

    def __init__(self, client: Any, secret_name: str, cache_seconds: float) -> None:
        self._store = SecretStore(client, ttl=cache_seconds)
        self._secret = secret_name

    async def identify(self, key: str) -> Caller | None:
        known = StoredKeys.model_validate(await self._store.get_json(self._secret))
        digest = hash_key(key)
        for stored in known.keys:
            if hmac.compare_digest(stored.sha256, digest):
                return Caller(
                    key_id=stored.id, principal=stored.principal or stored.id, role=stored.role
                )
        return None

    async def by_id(self, key_id: str) -> Caller | None:
        """The key with ``key_id`` as it is now (a web session names its key by id);
        None once it was removed."""
        known = StoredKeys.model_validate(await self._store.get_json(self._secret))
        for stored in known.keys:
            if stored.id == key_id:
                return Caller(
                    key_id=stored.id, principal=stored.principal or stored.id, role=stored.role
                )
        return None


_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key")
_bearer = HTTPBearer(auto_error=False, description="An API key as a bearer token")


async def caller(
    request: Request,
    api_key: Annotated[str | None, Depends(_api_key)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    key = api_key or (bearer.credentials if bearer else None)
    if not key:
        raise ProblemError(401, "Unauthorized", "an API key is needed (X-API-Key header)")
    ring: KeyRing = request.app.state.conveyor.keys
    found = await ring.identify(key)
    if found is None:
        raise ProblemError(401, "Unauthorized", "this API key is not known")
    return found


def require(role: Role) -> Callable[..., Awaitable[Caller]]:
    """A dependency that admits callers whose role is at least ``role``."""

    async def admitted(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if not who.role.allows(role):
            raise ProblemError(403, "Forbidden", f"this needs the {role.value} role")
        return who

    return admitted


Reader = Annotated[Caller, Depends(require(Role.READ))]
Operator = Annotated[Caller, Depends(require(Role.OPERATE))]
Admin = Annotated[Caller, Depends(require(Role.ADMIN))]
