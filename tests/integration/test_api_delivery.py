"""Actions through the API that lead to real deliveries: a resend makes a
second delivery to OpenSSH's sshd and a new history entry; a redrive, once
the destination is back, delivers a file whose transfer dead-lettered while
it was down. The scanner and transfer-sftp run in-process against moto,
exactly as in the other integration tests."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor_api.auth import Role
from conveyor_cli.localstack import servers
from conveyor_cli.localstack.processes import free_port
from conveyor_shared.delivery.service import TransferSettings
from conveyor_transfer_sftp.app import run as run_transfer_sftp
from tests.api_support import Api, start_api
from tests.support import InProcessServices, Stack, TcpProxy, eventually, sftp_route, start_scanner

CLIENT = "H7101"


async def file_state(api: Api, content_id: str) -> dict[str, Any]:
    async with api.client(Role.READ) as reader:
        response = await reader.get(f"/files/{CLIENT}/{content_id}")
    return response.json() if response.status_code == 200 else {}


async def settled(api: Api, content_id: str, attempts: int, status: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        state = await file_state(api, content_id)
        done = state.get("status") == status and len(state.get("attempts", [])) >= attempts
        return state if done else None

    return await eventually(check, timeout=90, what=f"the file {status} after {attempts} attempts")


def transfer_settings(stack: Stack, routes: Path) -> TransferSettings:
    return TransferSettings(
        stack=stack.name,
        routes_uri=str(routes),
        environment="test",
        receive_wait_seconds=1,
        lease_seconds=6,
    )


async def start_delivery(
    stack: Stack,
    aws: dict[str, Any],
    services: InProcessServices,
    sshd: servers.Sshd,
    tmp_path: Path,
    port: int,
    **route: Any,
) -> tuple[Api, Path]:
    """The scanner, transfer-sftp and the API, for one route to ``sshd`` through
    ``port``; the API and the destination folder."""
    folder = sshd.root / f"inbound-{tmp_path.name}"
    folder.mkdir(parents=True)
    routes = await sftp_route(
        stack, aws, sshd, tmp_path / "routes.yaml", CLIENT, folder.name, port, **route
    )
    start_scanner(services, stack, routes)
    services.start(run_transfer_sftp, transfer_settings(stack, routes))
    return await start_api(services, stack, aws, routes), folder


async def test_resend_delivers_a_second_time_with_a_new_history_entry(
    stack: Stack,
    aws: dict[str, Any],
    services: InProcessServices,
    sshd: servers.Sshd,
    tmp_path: Path,
) -> None:
    api, folder = await start_delivery(
        stack, aws, services, sshd, tmp_path, sshd.port, after_delivery="keep"
    )
    body = b"member,claim\n1,100\n" * 1000
    content_id = f"sha256:{hashlib.sha256(body).hexdigest()}"
    await aws["s3"].put_object(Bucket=stack.pickup_bucket, Key=f"{CLIENT}/claims.csv", Body=body)
    first = await settled(api, content_id, attempts=1, status="success")
    delivered = folder / "claims.csv"
    assert delivered.read_bytes() == body
    delivered.unlink()  # the partner lost it

    async with api.client(Role.OPERATE) as operator:
        response = await operator.post(
            f"/files/{CLIENT}/{content_id}/resend", json={"reason": "partner lost the file"}
        )
    assert response.status_code == 200, response.text
    [job_id] = response.json()["jobs"]
    second = await settled(api, content_id, attempts=2, status="success")
    assert delivered.read_bytes() == body, "delivered again"
    assert second["jobId"] == job_id != first["jobId"]
    assert [a["outcome"] for a in second["attempts"]] == ["success", "success"]
    assert second["actions"][0]["reason"] == "partner lost the file"
    assert second["actions"][0]["by"] == "operate-key"


@pytest.mark.slow
async def test_redrive_after_the_destination_returns_delivers(
    stack: Stack,
    aws: dict[str, Any],
    services: InProcessServices,
    sshd: servers.Sshd,
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens here until the proxy starts: the server is down
    api, folder = await start_delivery(
        stack,
        aws,
        services,
        sshd,
        tmp_path,
        port,
        after_delivery="keep",
        retry_delays_seconds=[1, 1],
    )
    body = b"eligibility\n" * 5000
    content_id = f"sha256:{hashlib.sha256(body).hexdigest()}"
    await aws["s3"].put_object(Bucket=stack.pickup_bucket, Key=f"{CLIENT}/elig.txt", Body=body)
    failed = await settled(api, content_id, attempts=3, status="fail")
    assert failed["errorKind"] in {"transient", "exhausted"}
    assert not (folder / "elig.txt").exists()

    async with TcpProxy(sshd.port, port=port), api.client(Role.OPERATE) as operator:
        response = await operator.post(
            f"/queues/{stack.name}-transfer-sftp/redrive", json={"reason": "server is back"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["resent"] == 1
        delivered = await settled(api, content_id, attempts=4, status="success")
        assert (folder / "elig.txt").read_bytes() == body
    assert delivered["actions"][0]["kind"] == "redrive"
    async with api.client(Role.READ) as reader:
        queues = (await reader.get("/queues")).json()
    assert {q["name"] for q in queues} >= {f"{stack.name}-transfer-sftp", f"{stack.name}-scanner"}


async def test_destination_test_reports_reachable_and_unreachable(
    stack: Stack,
    aws: dict[str, Any],
    services: InProcessServices,
    sshd: servers.Sshd,
    tmp_path: Path,
    unique: str,
) -> None:
    routes = await sftp_route(
        stack, aws, sshd, tmp_path / "routes.yaml", CLIENT, f"in-{unique}", sshd.port
    )
    api = await start_api(services, stack, aws, routes)
    async with api.client(Role.OPERATE) as operator:
        ok = (await operator.post(f"/clients/{CLIENT}/destination/test")).json()
        assert ok["ok"] is True, ok
        missing = await operator.post("/clients/H0000/destination/test")
        assert missing.status_code == 404
    async with httpx.AsyncClient(base_url=api.url) as anonymous:
        assert (await anonymous.post(f"/clients/{CLIENT}/destination/test")).status_code == 401
