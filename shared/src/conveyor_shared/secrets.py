"""Credentials, fetched by reference from AWS Secrets Manager.

The routes file names a secret (``credentials: {secret: NAME}``); only this
module reads its value. Values are parsed into models whose fields are
``SecretStr``, so an accidental ``repr`` or log line shows ``**********``.
"""

from __future__ import annotations

import json
import time
from typing import Any, TypeVar

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, model_validator

from conveyor_shared.errors import Misconfigured, NotFound, TransientError

ModelT = TypeVar("ModelT", bound=BaseModel)


class SftpCredentials(BaseModel):
    """A password, or a private key (OpenSSH or PEM text) with an optional passphrase."""

    model_config = ConfigDict(extra="forbid")
    password: SecretStr | None = None
    private_key: SecretStr | None = None
    passphrase: SecretStr | None = None

    @model_validator(mode="after")
    def _one_way_in(self) -> SftpCredentials:
        if self.password is None and self.private_key is None:
            raise ValueError("an SFTP secret needs 'password' or 'private_key'")
        return self


class S3Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    access_key_id: str
    secret_access_key: SecretStr
    session_token: SecretStr | None = None


class GcsCredentials(BaseModel):
    """A Google service-account key file, as JSON."""

    model_config = ConfigDict(extra="allow")
    type: str
    client_email: str
    private_key: SecretStr


class WebhookSecret(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: SecretStr


class SecretStore:
    """Reads JSON secrets from Secrets Manager, caching each for ``ttl`` seconds."""

    def __init__(self, client: Any, ttl: float = 300.0) -> None:
        self._client = client
        self._ttl = ttl
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    def forget(self) -> None:
        """Drop every cached value: the next ``get`` reads Secrets Manager again
        (after a refused login, in case the secret was rotated)."""
        self._cache.clear()

    async def get_json(self, name: str) -> dict[str, Any]:
        cached = self._cache.get(name)
        if cached and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        try:
            response = await self._client.get_secret_value(SecretId=name)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                raise NotFound(f"secret {name!r} does not exist") from None
            if code in {"AccessDeniedException", "DecryptionFailure"}:
                raise Misconfigured(f"secret {name!r} cannot be read ({code})") from None
            raise TransientError(f"reading secret {name!r} failed ({code})") from None
        try:
            value = json.loads(response["SecretString"])
        except (KeyError, json.JSONDecodeError):
            raise Misconfigured(f"secret {name!r} is not a JSON object") from None
        if not isinstance(value, dict):
            raise Misconfigured(f"secret {name!r} is not a JSON object")
        self._cache[name] = (time.monotonic(), value)
        return value

    async def get(self, name: str, model: type[ModelT]) -> ModelT:
        """Fetch secret ``name`` and parse it as ``model``.

        Raises ``Misconfigured`` naming the secret and the missing or unexpected
        fields, never their values.
        """
        try:
            return model.model_validate(await self.get_json(name))
        except ValidationError as exc:
            fields = ", ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
                for e in exc.errors(include_input=False)
            )
            raise Misconfigured(
                f"secret {name!r} is not a valid {model.__name__}: {fields}"
            ) from None
