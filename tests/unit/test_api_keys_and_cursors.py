"""The API's pure pieces: roles' order, key hashing, and cursors that refuse
tampering with a 400 instead of reaching DynamoDB."""

from __future__ import annotations

import base64
import json

import pytest

from conveyor_api.auth import Role, StoredKeys, hash_key, new_key, stored_keys
from conveyor_api.cursors import decode_cursor, encode_cursor
from conveyor_api.problems import ProblemError


def test_roles_are_ordered() -> None:
    assert Role.ADMIN.allows(Role.OPERATE)
    assert Role.OPERATE.allows(Role.READ)
    assert not Role.READ.allows(Role.OPERATE)
    assert not Role.OPERATE.allows(Role.ADMIN)


def test_the_secret_holds_hashes_only() -> None:
    key = new_key()
    secret = stored_keys({"ops": (Role.OPERATE, key)})
    assert key not in json.dumps(secret)
    [stored] = StoredKeys.model_validate(secret).keys
    assert stored.sha256 == hash_key(key)
    assert stored.role is Role.OPERATE


def test_a_cursor_round_trips() -> None:
    last = {"clientId": {"S": "H1"}, "contentId": {"S": "sha256:ab"}, "timestamp": {"S": "2026"}}
    assert decode_cursor(encode_cursor(last)) == last
    assert encode_cursor(None) is None


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64!",
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(json.dumps({"secret": {"S": "x"}}).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps({"clientId": {"N": "1"}}).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps({"clientId": {"S": ""}}).encode()).decode(),
    ],
)
def test_a_tampered_cursor_is_a_400(cursor: str) -> None:
    with pytest.raises(ProblemError) as raised:
        decode_cursor(cursor)
    assert raised.value.status == 400
