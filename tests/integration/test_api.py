"""The status and resend API over a real moto server: the auth matrix,
lists with filters and cursors, CSV, one file's history, idempotent resends,
and schemathesis over the OpenAPI schema of the live app.

The ledger is written with the ledger's own functions (``record_new``,
``settle``), exactly as the scanner and the transfer workers write it; the
API runs under uvicorn on a free 127.0.0.1 port and is reached over HTTP.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor_api.auth import Role
from conveyor_shared.ledger.files import FileLedger
from conveyor_shared.ledger.jobs import JobLedger
from conveyor_shared.ledger.models import FileEntry, FileStatus, Job, JobStatus
from tests.api_support import Api, start_api
from tests.support import InProcessServices, Stack, write_routes

CLIENT = "H7001"


def s3_route(stack: Stack, client_id: str = CLIENT) -> dict[str, Any]:
    return {
        "name": f"client {client_id}",
        "client_id": client_id,
        "contacts": ["ops@example.com"],
        "pickup": f"s3://{stack.pickup_bucket}/{client_id}/",
        "destination": {"type": "s3", "bucket": f"{stack.name}-out"},
        "after_delivery": "keep",
    }


@pytest.fixture
async def api(
    stack: Stack, aws: dict[str, Any], services: InProcessServices, tmp_path: Path
) -> Api:
    routes = write_routes(tmp_path / "routes.yaml", [s3_route(stack)])
    return await start_api(services, stack, aws, routes)


async def seed(api: Api, name: str, status: FileStatus, body: bytes | None = None) -> FileEntry:
    """One file as the scanner records it and a worker settles it; its upload
    stays in the pick-up."""
    data = body if body is not None else name.encode() * 3
    key = f"{CLIENT}/{name}"
    put = await api.aws["s3"].put_object(Bucket=api.stack.pickup_bucket, Key=key, Body=data)
    db = api.aws["dynamodb"]
    files = FileLedger(db, f"{api.stack.name}-files")
    jobs = JobLedger(db, f"{api.stack.name}-jobs")
    job_id = f"{CLIENT}-job-{name}"
    now = "2026-01-01T00:00:00.000Z"
    await jobs.create(
        Job(
            job_id=job_id,
            client_id=CLIENT,
            route_name=f"client {CLIENT}",
            status=JobStatus.FORMING,
            started_at=now,
        )
    )
    entry = FileEntry(
        client_id=CLIENT,
        content_id=f"sha256:{hashlib.sha256(data).hexdigest()}",
        timestamp=now,
        status=FileStatus.PROCESSING,
        file_path=f"s3://{api.stack.pickup_bucket}/{key}",
        file_name=name,
        job_id=job_id,
        route_name=f"client {CLIENT}",
        size=len(data),
        source_bucket=api.stack.pickup_bucket,
        source_key=key,
        source_version=put.get("VersionId"),
        source_etag=put["ETag"].strip('"'),
        active_since=now,
    )
    assert await files.record_new(entry)
    if status is not FileStatus.PROCESSING:
        settled = await files.settle(
            entry,
            status,
            error="destination refused" if status is FileStatus.FAIL else None,
            error_kind="permanent" if status is FileStatus.FAIL else None,
            delivered_to=f"s3://{api.stack.name}-out/{name}"
            if status is FileStatus.SUCCESS
            else None,
        )
        assert settled
    return entry


async def transfer_messages(api: Api) -> list[dict[str, Any]]:
    url = (await api.aws["sqs"].get_queue_url(QueueName=f"{api.stack.name}-transfer-s3"))[
        "QueueUrl"
    ]
    response = await api.aws["sqs"].receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=0
    )
    return [json.loads(m["Body"]) for m in response.get("Messages", [])]


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


async def test_auth_matrix(api: Api) -> None:
    entry = await seed(api, "a.csv", FileStatus.SUCCESS)
    resend = f"/files/{CLIENT}/{entry.content_id}/resend"
    async with api.client() as anonymous:
        assert (await anonymous.get("/healthz")).status_code == 200
        problem(await anonymous.get("/files", params={"client": CLIENT}), 401)
        problem(await anonymous.post(resend, json={}), 401)
        anonymous.headers["X-API-Key"] = "cvy_not-a-key"
        problem(await anonymous.get("/files", params={"client": CLIENT}), 401)
    async with api.client(Role.READ) as reader:
        assert (await reader.get("/files", params={"client": CLIENT})).status_code == 200
        problem(await reader.post(resend, json={"reason": "try"}), 403)
        assert (await reader.get("/metrics")).status_code == 200
    async with api.client(Role.OPERATE) as operator:
        response = await operator.post(resend, json={"reason": "partner lost it"})
        assert response.status_code == 200, response.text
        assert response.json()["resent"] == 1
        problem(await operator.post("/files/resend", json={"client": CLIENT, "dryRun": False}), 403)
    async with api.client(Role.ADMIN) as admin:
        dry = await admin.post("/files/resend", json={"client": CLIENT, "dryRun": True})
        assert dry.status_code == 200
        assert dry.json()["dryRun"] is True


async def test_resend_resets_entry_dispatches_and_is_recorded(api: Api) -> None:
    entry = await seed(api, "claims.csv", FileStatus.FAIL)
    path = f"/files/{CLIENT}/{entry.content_id}"
    async with api.client(Role.OPERATE) as operator:
        response = await operator.post(f"{path}/resend", json={"reason": "fixed the host key"})
        result = response.json()
        assert response.status_code == 200, response.text
        assert result["resent"] == 1
        [job_id] = result["jobs"]
        detail = (await operator.get(path)).json()
        assert detail["status"] == "processing"
        assert detail["jobId"] == job_id
        assert detail["sendAttempts"] == 0
        assert [a["outcome"] for a in detail["attempts"]] == ["fail"], "history is kept"
        [action] = detail["actions"]
        assert action["by"] == "operate-key"
        assert action["reason"] == "fixed the host key"
        # In flight now: a second resend is refused, not doubled.
        problem(await operator.post(f"{path}/resend", json={}), 409)
    [message] = await transfer_messages(api)
    assert message["kind"] == "transfer.requested"
    assert message["job_id"] == job_id
    assert message["content_id"] == entry.content_id


async def test_idempotency_key_returns_first_response(api: Api) -> None:
    entry = await seed(api, "once.csv", FileStatus.SUCCESS)
    path = f"/files/{CLIENT}/{entry.content_id}/resend"
    headers = {"Idempotency-Key": "resend-once-1"}
    async with api.client(Role.OPERATE) as operator:
        first = await operator.post(path, json={"reason": "r"}, headers=headers)
        second = await operator.post(path, json={"reason": "r"}, headers=headers)
        assert first.status_code == second.status_code == 200
        assert first.json() == second.json()
        assert second.headers.get("Idempotent-Replayed") == "true"
        problem(await operator.post(path, json={"reason": "other"}, headers=headers), 422)
    assert len(await transfer_messages(api)) == 1


async def test_pagination_filters_and_csv(api: Api) -> None:
    seeded = []
    for i in range(7):
        status = FileStatus.FAIL if i % 3 == 0 else FileStatus.SUCCESS
        seeded.append(await seed(api, f"batch-{i}.txt", status))
        await asyncio.sleep(0.002)  # distinct millisecond timestamps
    seeded.append(await seed(api, "other.bin", FileStatus.SUCCESS))
    async with api.client(Role.READ) as reader:
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"client": CLIENT, "limit": 3, **({"cursor": cursor} if cursor else {})}
            page = (await reader.get("/files", params=params)).json()
            seen += [f["fileName"] for f in page["items"]]
            pages += 1
            cursor = page.get("nextCursor")
            if not cursor:
                break
        assert sorted(seen) == sorted(e.file_name for e in seeded)
        assert len(set(seen)) == len(seen)
        timestamps = [
            f["timestamp"]
            for f in (await reader.get("/files", params={"client": CLIENT, "limit": 50})).json()[
                "items"
            ]
        ]
        assert timestamps == sorted(timestamps, reverse=True)
        failed = (await reader.get("/files", params={"client": CLIENT, "status": "fail"})).json()
        assert {f["fileName"] for f in failed["items"]} == {
            "batch-0.txt",
            "batch-3.txt",
            "batch-6.txt",
        }
        # A filtered read keeps more than a page: the cursor resumes after the page's last file.
        successes: list[str] = []
        params = {"client": CLIENT, "status": "success", "limit": 2}
        while True:
            page = (await reader.get("/files", params=params)).json()
            successes += [f["fileName"] for f in page["items"]]
            if not page.get("nextCursor"):
                break
            params["cursor"] = page["nextCursor"]
        assert sorted(successes) == sorted(
            e.file_name
            for e in seeded
            if e.file_name not in {"batch-0.txt", "batch-3.txt", "batch-6.txt"}
        )
        across = (await reader.get("/files", params={"status": "fail", "limit": 2})).json()
        assert len(across["items"]) == 2
        assert across["nextCursor"]
        named = (await reader.get("/files", params={"client": CLIENT, "name": "other"})).json()
        assert [f["fileName"] for f in named["items"]] == ["other.bin"]
        checksum = seeded[-1].content_id.split(":", 1)[1]
        by_sum = (await reader.get("/files", params={"checksum": checksum})).json()
        assert [f["fileName"] for f in by_sum["items"]] == ["other.bin"]
        problem(await reader.get("/files"), 400)
        problem(await reader.get("/files", params={"client": CLIENT, "cursor": "garbage!"}), 400)
        problem(await reader.get("/files", params={"client": CLIENT, "limit": 0}), 422)
        exported = await reader.get("/files.csv", params={"client": CLIENT, "status": "success"})
        assert exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert len(rows) == 5
        assert {r["status"] for r in rows} == {"success"}
        problem(await reader.get(f"/files/{CLIENT}/sha256:{'0' * 64}"), 404)


async def test_schemathesis_finds_no_server_errors(api: Api) -> None:
    """Every operation of the OpenAPI schema, fuzzed with an admin key over HTTP:
    no 5xx, every response as the schema says (status, content type, body)."""
    await seed(api, "fuzz.txt", FileStatus.SUCCESS)
    process = await asyncio.create_subprocess_exec(
        "schemathesis",
        "run",
        f"{api.url}/openapi.json",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance",
        "--max-examples",
        "10",
        "--header",
        f"X-API-Key: {api.keys[Role.ADMIN]}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=280)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-6000:]


async def conveyor(api: Api, role: Role | None, *args: str) -> tuple[int, str]:
    """Run the ``conveyor`` command against the live API; its exit code and output."""
    env = {**os.environ, "CONVEYOR_API_URL": api.url}
    env.pop("CONVEYOR_API_KEY", None)
    if role is not None:
        env["CONVEYOR_API_KEY"] = api.keys[role]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "conveyor_cli.main",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_command_line_over_the_api(api: Api) -> None:
    entry = await seed(api, "cli.csv", FileStatus.FAIL)
    file_id = f"{CLIENT}/{entry.content_id}"
    code, out = await conveyor(api, Role.READ, "files", "--client", CLIENT, "--json")
    assert code == 0, out
    assert [f["fileName"] for f in json.loads(out)["items"]] == ["cli.csv"]
    code, out = await conveyor(api, Role.READ, "file", file_id)
    assert code == 0
    assert "destination refused" in out
    code, out = await conveyor(api, None, "files", "--client", CLIENT)
    assert code == 3, out
    code, out = await conveyor(api, Role.READ, "resend", file_id, "--reason", "x")
    assert code == 3, out
    code, out = await conveyor(api, Role.OPERATE, "resend", file_id, "--reason", "cli")
    assert code == 0, out
    assert "resent 1 of 1" in out
    code, out = await conveyor(api, Role.OPERATE, "resend", file_id)
    assert code == 1, "a file in flight is not resent twice"
    code, out = await conveyor(api, Role.READ, "status", "--json")
    assert code == 0, out
    assert json.loads(out)["clients"][0]["clientId"] == CLIENT
    code, out = await conveyor(api, Role.OPERATE, "source", "check", "no-such-source")
    assert code == 2, out
    assert "no such source" in out
