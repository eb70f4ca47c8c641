"""The web page's session cookie and CSRF tokens: what a signature, an age
limit, a key rotation and a nonce bind."""

from __future__ import annotations

import time

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from conveyor_api.web.session import CSRF_SALT, SESSION_SALT, Session, SessionSigner, new_nonce

KEY = "k" * 40
OTHER = "o" * 40


def session(**changes: str) -> Session:
    fields = {
        "key_id": "ops-alice",
        "principal": "Alice",
        "role": "operate",
        "csrf_nonce": new_nonce(),
    }
    return Session.model_validate(fields | changes)


def signed_ago(seconds: int, payload: object, key: str = KEY, salt: str = SESSION_SALT) -> str:
    class Backdated(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - seconds

    return URLSafeTimedSerializer(key, salt=salt, signer=Backdated).dumps(payload)


def test_a_signed_session_reads_back() -> None:
    signer = SessionSigner([KEY])
    original = session()
    assert signer.load(signer.dump(original)) == original


@pytest.mark.parametrize("cookie", [None, "", "garbage", "a.b.c"])
def test_no_or_malformed_cookie_is_no_session(cookie: str | None) -> None:
    assert SessionSigner([KEY]).load(cookie) is None


def test_a_cookie_signed_with_another_key_is_refused() -> None:
    assert SessionSigner([KEY]).load(SessionSigner([OTHER]).dump(session())) is None


def test_a_tampered_cookie_is_refused() -> None:
    signer = SessionSigner([KEY])
    payload, stamp, signature = signer.dump(session(role="read")).rsplit(".", 2)
    admin = signer.dump(session(role="admin")).rsplit(".", 2)[0]
    assert signer.load(f"{admin}.{stamp}.{signature}") is None
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    assert signer.load(f"{payload}.{stamp}.{flipped}") is None
    assert signer.load(f"{payload}.{stamp}.{signature}") is not None


def test_a_valid_signature_over_a_foreign_shape_is_refused() -> None:
    """Signed by our key but not a session (another salt's token, extra fields)."""
    signer = SessionSigner([KEY])
    assert signer.load(signer.csrf_token(new_nonce())) is None
    forged = URLSafeTimedSerializer(KEY, salt=SESSION_SALT).dumps(
        {**session().model_dump(), "role": "admin", "extra": True}
    )
    assert signer.load(forged) is None


def test_an_expired_cookie_is_refused_and_a_young_one_is_not() -> None:
    signer = SessionSigner([KEY], max_age_seconds=3600)
    payload = session().model_dump()
    assert signer.load(signed_ago(3601 + 5, payload)) is None
    assert signer.load(signed_ago(3000, payload)) is not None


def test_rotation_old_key_still_verifies_new_key_signs() -> None:
    before = SessionSigner([KEY]).dump(session())
    rotated = SessionSigner([OTHER, KEY])
    assert rotated.load(before) is not None
    assert SessionSigner([OTHER]).load(rotated.dump(session())) is not None


def test_short_signing_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32 characters"):
        SessionSigner(["short"])
    with pytest.raises(ValueError, match="32 characters"):
        SessionSigner([])


def test_csrf_token_is_bound_to_its_nonce() -> None:
    signer = SessionSigner([KEY])
    nonce = new_nonce()
    token = signer.csrf_token(nonce)
    assert signer.csrf_valid(token, nonce)
    assert not signer.csrf_valid(token, new_nonce())  # another session's form
    assert not signer.csrf_valid(token, None)
    assert not signer.csrf_valid(None, nonce)
    assert not signer.csrf_valid("", nonce)
    assert not signer.csrf_valid(SessionSigner([OTHER]).csrf_token(nonce), nonce)


def test_csrf_token_is_not_a_session_and_a_session_is_not_a_token() -> None:
    signer = SessionSigner([KEY])
    current = session()
    assert not signer.csrf_valid(signer.dump(current), current.csrf_nonce)
    assert not signer.csrf_valid(signer.dump_presession(current.csrf_nonce), current.csrf_nonce)


def test_an_old_csrf_token_is_refused() -> None:
    signer = SessionSigner([KEY], csrf_max_age_seconds=600)
    nonce = new_nonce()
    old = signed_ago(601 + 5, nonce, salt=CSRF_SALT)
    assert not signer.csrf_valid(old, nonce)
    assert signer.csrf_valid(signed_ago(60, nonce, salt=CSRF_SALT), nonce)


def test_presession_nonce_round_trip_and_forgery() -> None:
    signer = SessionSigner([KEY])
    nonce = new_nonce()
    assert signer.load_presession(signer.dump_presession(nonce)) == nonce
    assert signer.load_presession(SessionSigner([OTHER]).dump_presession(nonce)) is None
    assert signer.load_presession(signer.csrf_token(nonce)) is None
