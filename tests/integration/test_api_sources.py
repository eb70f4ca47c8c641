"""Provider sources through the API, over real servers: OpenSSH sshd as the
partner, provider sync running in-process on moto, the API under uvicorn.

``source check``/``test`` say what a server holds or exactly why it cannot
be read; a plan says what the next poll would copy and changes nothing; a
poll asked for through the API (idempotent, recorded) lands the file, which
the received-files list then shows and the source's health reflects. The
received list pages newest first across sources without skipping or
repeating a file."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor_api.auth import Role
from conveyor_cli.localstack import servers
from conveyor_cli.localstack.processes import free_port
from conveyor_provider_sync.app import run as run_provider_sync
from conveyor_provider_sync.settings import ProviderSyncSettings
from conveyor_shared.ledger.dynamo import iso_ago, now_iso
from conveyor_shared.ledger.received import Look, ReceivedLedger, ReceivedVersion
from tests.api_support import Api, sftp_source, start_api
from tests.integration.test_api import conveyor
from tests.support import InProcessServices, Stack, eventually, write_routes


@dataclass
class Partner:
    api: Api
    folder: Path
    source_id: str
    #: A source whose server refuses connections.
    down_id: str
    #: A source no server answers for; its ledger is written directly.
    quiet_id: str

    @property
    def ledger(self) -> ReceivedLedger:
        return ReceivedLedger(self.api.aws["dynamodb"], f"{self.api.stack.name}-received")


@pytest.fixture
async def partner(
    stack: Stack,
    aws: dict[str, Any],
    sshd: servers.Sshd,
    services: InProcessServices,
    unique: str,
    tmp_path: Path,
) -> Partner:
    spec, folder = await sftp_source(stack, aws, sshd, f"acme-{unique}", "Acme Health")
    down = {**spec, "id": f"down-{unique}", "name": "Down Health", "port": free_port()}
    quiet = {**down, "id": f"quiet-{unique}", "name": "Quiet Health"}
    routes = write_routes(tmp_path / "routes.yaml", [], sources=[spec, down, quiet])
    services.start(
        run_provider_sync,
        ProviderSyncSettings(
            stack=stack.name, routes_uri=str(routes), environment="test", receive_wait_seconds=1
        ),
    )
    api = await start_api(services, stack, aws, routes)
    return Partner(api, folder, spec["id"], down["id"], quiet["id"])


async def actions_on(api: Api, subject: str) -> list[dict[str, Any]]:
    response = await api.aws["dynamodb"].query(
        TableName=f"{api.stack.name}-locks",
        IndexName="bySubject",
        KeyConditionExpression="subject = :s",
        ExpressionAttributeValues={":s": {"S": subject}},
    )
    return [{k: next(iter(v.values())) for k, v in i.items()} for i in response["Items"]]


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


async def test_check_test_plan_and_poll_now_land_the_file(partner: Partner) -> None:
    api, source = partner.api, partner.source_id
    body = b"claim,amount\n" + b"1,20\n" * 300
    (partner.folder / "claims.csv").write_bytes(body)
    async with api.client(Role.OPERATE) as operator, api.client(Role.READ) as reader:
        assert (await reader.post(f"/sources/{source}/check")).status_code == 403
        assert (await operator.post("/sources/no-such-source/check")).status_code == 404

        check = ok(await operator.post(f"/sources/{source}/check", json={"reason": "onboarding"}))
        assert (check["ok"], check["files"], check["sample"]) == (True, 1, ["claims.csv"])
        test = ok(await operator.post(f"/sources/{source}/test"))
        assert (test["ok"], test["status"]) == (True, "ok")
        refused = ok(await operator.post(f"/sources/{partner.down_id}/check"))
        assert (refused["ok"], refused["failedAt"]) == (False, "refused")
        refused_test = ok(await operator.post(f"/sources/{partner.down_id}/test"))
        assert (refused_test["status"], bool(refused_test["hint"])) == ("refused", True)

        (plan,) = ok(await operator.get("/plan", params={"source": source}))
        assert [(f["path"], f["action"]) for f in plan["files"]] == [("claims.csv", "copy")]
        every = {p["sourceId"]: p for p in ok(await operator.get("/plan"))}
        assert every[partner.down_id]["error"]
        assert ok(await reader.get("/received", params={"source": source}))["items"] == []

        before = ok(await reader.get(f"/sources/{source}"))
        assert before["lastGoodPollAt"] is None

        key = {"Idempotency-Key": uuid.uuid4().hex}
        first = ok(await operator.post(f"/sources/{source}/poll", json={}, headers=key))
        again = await operator.post(f"/sources/{source}/poll", json={}, headers=key)
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert ok(again)["actionId"] == first["actionId"]

        async def landed() -> list[dict[str, Any]]:
            page = ok(await reader.get("/received", params={"source": source}))
            items: list[dict[str, Any]] = page["items"]
            return items

        (received,) = await eventually(landed, timeout=60, what="the polled file to land")
        assert received["path"] == "claims.csv"
        assert received["sha256"] == hashlib.sha256(body).hexdigest()
        bucket, _, key_ = received["uri"].removeprefix("s3://").partition("/")
        stored = await api.aws["s3"].get_object(Bucket=bucket, Key=key_)
        assert await stored["Body"].read() == body

        health = ok(await reader.get(f"/sources/{source}"))
        assert health["lastGoodPollAt"] is not None
        assert health["oldestUnprocessedSeconds"] is None
        assert (health["failedLast24H"], health["deadLetters"]) == (0, 0)

    actions = await actions_on(api, f"source/{source}")
    kinds = sorted(a["kind"] for a in actions)
    assert kinds == ["source.check", "source.check", "source.poll"]  # the test is a check
    assert {a["by"] for a in actions} == {"operate-key"}
    assert "onboarding" in {a.get("reason") for a in actions}


async def test_health_counts_files_waiting_and_copies_failing(partner: Partner) -> None:
    """Path states as provider sync's poll writes them: one seen and not yet
    copied, one whose copy was asked for 20 minutes ago and never recorded."""
    quiet, ledger, db = partner.quiet_id, partner.ledger, partner.api.aws["dynamodb"]
    look = Look(size=10, modified="2026-11-30T10:00:00.000Z", precision="second")
    assert await ledger.note_look(quiet, "waiting.csv", look, None)
    stuck = await ledger.note_look(quiet, "stuck.csv", look, None)
    assert stuck is not None
    await db.update_item(
        TableName=ledger.table,
        Key={"source": {"S": quiet}, "key": {"S": "path#stuck.csv"}},
        UpdateExpression="SET fetchRequestedAt = :t, lookedAt = :l",
        ExpressionAttributeValues={":t": {"S": iso_ago(1200)}, ":l": {"S": iso_ago(1300)}},
    )
    async with partner.api.client(Role.READ) as reader:
        health = ok(await reader.get(f"/sources/{quiet}"))
        every = {h["sourceId"]: h for h in ok(await reader.get("/sources"))}
    assert health["failedLast24H"] == 1
    assert 1290 <= health["oldestUnprocessedSeconds"] < 1400
    assert every[quiet]["failedLast24H"] == 1
    assert every[partner.source_id]["failedLast24H"] == 0


async def _put_versions(partner: Partner, source: str, names: list[str]) -> None:
    for i, name in enumerate(names):
        data = f"{source}/{name}".encode()
        await partner.ledger.put_version(
            ReceivedVersion(
                source=source,
                path=f"reports/{name}",
                sha256=hashlib.sha256(data).hexdigest(),
                size=len(data),
                modified="2026-11-30T10:00:00.000Z",
                first_seen=now_iso(),
                stored_at=f"2026-12-01T10:{i * 2 + (source == partner.quiet_id):02d}:00.000Z",
                uri=f"s3://{partner.api.stack.name}-landing/x/{source}/{name}",
            )
        )


async def _every_page(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        paging: dict[str, str] = {"cursor": cursor} if cursor else {}
        page = ok(await client.get("/received", params={**params, **paging}))
        found += page["items"]
        cursor = page.get("nextCursor")
        if cursor is None:
            return found
    raise AssertionError("the pages never ended")


async def test_received_files_page_newest_first_across_sources(partner: Partner) -> None:
    a, b = partner.down_id, partner.quiet_id
    await _put_versions(partner, a, [f"claims-{i}.csv" for i in range(7)])
    await _put_versions(partner, b, ["roster-0.csv", "claims-b.csv", "roster-2.csv"])
    async with partner.api.client(Role.READ) as reader:
        every = await _every_page(reader, limit=3)
        times = [f["storedAt"] for f in every]
        assert times == sorted(times, reverse=True)
        assert len({(f["source"], f["path"]) for f in every}) == len(every) == 10
        assert {f["sourceName"] for f in every} == {"Down Health", "Quiet Health"}

        claims = await _every_page(reader, limit=2, name="claims")
        assert len(claims) == 8
        assert all("claims" in f["fileName"] for f in claims)
        only_b = await _every_page(reader, source=b, limit=1)
        assert [f["path"] for f in only_b] == [
            "reports/roster-2.csv",
            "reports/claims-b.csv",
            "reports/roster-0.csv",
        ]

        page = ok(await reader.get("/received", params={"source": a, "limit": 2}))
        bad = await reader.get("/received", params={"cursor": page["nextCursor"][:-3] + "xyz"})
        assert bad.status_code == 400
        other = await reader.get("/received", params={"source": b, "cursor": page["nextCursor"]})
        assert other.status_code == 400
        assert (await reader.get("/received", params={"source": "nope"})).status_code == 404


async def test_command_line_for_sources(partner: Partner) -> None:
    api, source = partner.api, partner.source_id
    (partner.folder / "roster.csv").write_bytes(b"member\n1\n")
    code, out = await conveyor(api, Role.OPERATE, "source", "check", source, "-r", "cli")
    assert (code, "ok: 1 file(s)" in out) == (0, True), out
    code, out = await conveyor(api, Role.OPERATE, "source", "test", partner.down_id)
    assert (code, "refused" in out, "hint:" in out) == (1, True, True), out
    code, out = await conveyor(api, Role.OPERATE, "plan", source, "--json")
    assert code == 0, out
    assert [f["action"] for f in json.loads(out)[0]["files"]] == ["copy"]
    code, out = await conveyor(api, Role.OPERATE, "plan")
    assert (code, "cannot list" in out) == (1, True), out
    code, out = await conveyor(api, Role.READ, "poll", source, "now")
    assert code == 3, out
    code, out = await conveyor(api, Role.OPERATE, "poll", source, "now")
    assert (code, "poll requested" in out) == (0, True), out

    async def listed() -> str | None:
        code, out = await conveyor(api, Role.READ, "files", "--received", "--source", source)
        return out if code == 0 and "roster.csv" in out else None

    await eventually(listed, timeout=60, what="the polled file in `conveyor files --received`")
    code, out = await conveyor(api, Role.READ, "status")
    assert (code, "Sources" in out, "care_team" in out) == (0, True, True), out
