"""Running the status and resend API in a test: in-process under uvicorn on a
free 127.0.0.1 port, with one key per role (only their hashes in the secret)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from conveyor_api.app import run as run_api
from conveyor_api.auth import Role, new_key, stored_keys
from conveyor_api.settings import ApiSettings
from conveyor_cli.localstack import servers
from conveyor_cli.localstack.processes import free_port
from tests.support import InProcessServices, Stack, eventually


@dataclass
class Api:
    url: str
    stack: Stack
    aws: dict[str, Any]
    keys: dict[Role, str]

    def client(self, role: Role | None = None) -> httpx.AsyncClient:
        headers = {"X-API-Key": self.keys[role]} if role else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)


async def start_api(
    services: InProcessServices,
    stack: Stack,
    aws: dict[str, Any],
    routes: Path | str,
    **settings: Any,
) -> Api:
    """The API in-process, its keys (hashes only) in a new secret; ``settings``
    adds to or overrides its ``ApiSettings``."""
    keys = {role: new_key() for role in Role}
    secret = f"{stack.name}/api-keys"
    await aws["secretsmanager"].create_secret(
        Name=secret,
        SecretString=json.dumps(stored_keys({f"{r.value}-key": (r, k) for r, k in keys.items()})),
    )
    port = free_port()
    services.start(
        run_api,
        ApiSettings(
            stack=stack.name,
            routes_uri=str(routes),
            environment="test",
            api_keys_secret=secret,
            api_port=port,
            metrics_refresh_seconds=1,
            **settings,
        ),
    )
    api = Api(f"http://127.0.0.1:{port}", stack, aws, keys)

    async def up() -> bool:
        try:
            async with api.client() as client:
                return (await client.get("/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    await eventually(up, timeout=30, what="the API to answer /healthz")
    return api


async def sftp_source(
    stack: Stack, aws: dict[str, Any], sshd: servers.Sshd, source_id: str, name: str
) -> tuple[dict[str, Any], Path]:
    """A care-team provider source on the test sshd (its key in a secret of
    its own, its folder new, fetched on first look) landing in a new
    ``<stack>-landing`` bucket: the routes file's entry, and the folder."""
    folder = sshd.root / source_id
    folder.mkdir()
    secret = f"{stack.name}/sync-{source_id}"
    await aws["secretsmanager"].create_secret(
        Name=secret, SecretString=json.dumps({"private_key": sshd.private_key})
    )
    await aws["s3"].create_bucket(Bucket=f"{stack.name}-landing")
    spec = {
        "id": source_id,
        "name": name,
        "partner_id": "H4101",
        "protocol": "sftp",
        "host": "127.0.0.1",
        "port": sshd.port,
        "username": sshd.username,
        "credentials": {"secret": secret},
        "host_keys": [sshd.host_key],
        "directory": folder.name,
        "landing": f"s3://{stack.name}-landing/partners/",
        "audience": "care_team",
        "stability": {"settle_seconds": 0},
    }
    return spec, folder
