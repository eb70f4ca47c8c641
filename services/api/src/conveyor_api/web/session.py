"""The web page's session (S6): an API key, checked once at sign-in, becomes a
signed cookie that names who signed in, their role and a CSRF nonce.

The cookie is signed, not encrypted, so it never holds the key itself: only
the key's id, which every request checks again against the key store (a
revoked key ends its sessions at once). Signing keys come from the secret
store; several may be given so that a rotation does not sign anyone out (the
first signs, all verify).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

SESSION_COOKIE = "conveyor_session"
#: Holds the CSRF nonce of a browser that has not signed in yet (the sign-in form's).
PRESESSION_COOKIE = "conveyor_presession"
SESSION_SALT = "conveyor.web.session"
PRESESSION_SALT = "conveyor.web.presession"
CSRF_SALT = "conveyor.web.csrf"


class Session(BaseModel):
    """What the session cookie says, once its signature and age are checked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The API key's public id (never the key).
    key_id: str = Field(min_length=1, max_length=200)
    #: Who the key belongs to, as the key store names them; shown and recorded.
    principal: str = Field(min_length=1, max_length=200)
    role: str = Field(min_length=1, max_length=40)
    #: Random per session: what every form's CSRF token is bound to.
    csrf_nonce: str = Field(min_length=16, max_length=100)


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class SessionSigner:
    """Signs and checks session cookies and CSRF tokens with the same keys.

    ``max_age_seconds`` bounds a session: the signature carries its time, and
    an older cookie is refused even if a browser kept it past its expiry.
    """

    keys: Sequence[str] = field(repr=False)
    max_age_seconds: int = 8 * 3600
    csrf_max_age_seconds: int = 8 * 3600

    def __post_init__(self) -> None:
        if not self.keys or any(len(k) < 32 for k in self.keys):
            raise ValueError("session signing keys must be at least 32 characters")

    def _serializer(self, salt: str) -> URLSafeTimedSerializer:
        # itsdangerous signs with the last key and verifies with all of them.
        return URLSafeTimedSerializer(list(reversed(self.keys)), salt=salt)

    def dump(self, session: Session) -> str:
        return self._serializer(SESSION_SALT).dumps(session.model_dump())

    def load(self, cookie: str | None) -> Session | None:
        """The session in ``cookie``; None if missing, forged, tampered or expired."""
        if not cookie:
            return None
        try:
            data = self._serializer(SESSION_SALT).loads(cookie, max_age=self.max_age_seconds)
        except (BadSignature, SignatureExpired):
            return None
        try:
            return Session.model_validate(data)
        except ValidationError:
            return None

    def dump_presession(self, nonce: str) -> str:
        return self._serializer(PRESESSION_SALT).dumps(nonce)

    def load_presession(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            nonce = self._serializer(PRESESSION_SALT).loads(
                cookie, max_age=self.csrf_max_age_seconds
            )
        except (BadSignature, SignatureExpired):
            return None
        return nonce if isinstance(nonce, str) else None

    def csrf_token(self, nonce: str) -> str:
        """The token a form carries: the nonce, signed with a time."""
        return self._serializer(CSRF_SALT).dumps(nonce)

    def csrf_valid(self, token: str | None, nonce: str | None) -> bool:
        """Whether ``token`` was minted for ``nonce`` and is not too old.

        A token from another session (or no session) names another nonce, so
        a page on another site cannot post a form even if it got a token."""
        if not token or not nonce:
            return False
        try:
            signed = self._serializer(CSRF_SALT).loads(token, max_age=self.csrf_max_age_seconds)
        except (BadSignature, SignatureExpired):
            return False
        return isinstance(signed, str) and hmac.compare_digest(signed, nonce)
