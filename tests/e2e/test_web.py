"""The web page in headless Chromium (Debian's build, driven by Playwright)
over the whole real path: files go through the scanner and transfer-s3 to S3
destinations in moto; an operator signs in with an API key, finds a delivered
file, downloads it (a presigned S3 URL) and checks its bytes, then resends a
failed file with a reason, which leads to a real second delivery.

A care-team (read) key, signing in by keyboard alone, sees a file that
provider sync landed from a partner's SFTP server (OpenSSH) marked new,
finds it by name, downloads the stored version (recorded) and is shown no
resend. Over HTTP, without a browser: a forged,
tampered, expired or revoked session cookie is refused, and so is a form
without its CSRF token. Against moto: "new since your last visit" holds over
reloads and moves on once a visit is over."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from playwright.async_api import BrowserContext, Download, Page, async_playwright, expect

from conveyor_api.auth import Role
from conveyor_api.web.session import SESSION_COOKIE, SESSION_SALT, Session, SessionSigner
from conveyor_api.web.visits import last_visit
from conveyor_cli.localstack import servers
from conveyor_provider_sync.app import run as run_provider_sync
from conveyor_provider_sync.settings import ProviderSyncSettings
from conveyor_shared.delivery.service import TransferSettings
from conveyor_shared.ledger.dynamo import iso_ago
from conveyor_transfer_s3.app import run as run_transfer_s3
from tests.api_support import Api, sftp_source, start_api
from tests.support import (
    InProcessServices,
    Stack,
    eventually,
    ledger_items,
    start_scanner,
    write_routes,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DELIVERED = "H8101"
LATE = "H8102"


@dataclass
class Web(Api):
    """The API with its page, and the key that signs its session cookies."""

    signing_key: str

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30, follow_redirects=False)


def s3_route(stack: Stack, client_id: str, bucket: str) -> dict[str, Any]:
    return {
        "name": f"client {client_id}",
        "client_id": client_id,
        "contacts": ["ops@example.com"],
        "pickup": f"s3://{stack.pickup_bucket}/{client_id}/",
        "destination": {"type": "s3", "bucket": bucket, "prefix": "inbound/"},
        # A resend sends the upload again, so it stays in the pick-up.
        "after_delivery": "keep",
    }


async def start_web(
    services: InProcessServices, stack: Stack, aws: dict[str, Any], routes: Path
) -> Web:
    """The API in-process with its session signing key in a secret of its own."""
    signing_key = secrets.token_urlsafe(32)
    session_secret = f"{stack.name}/web-session"
    await aws["secretsmanager"].create_secret(
        Name=session_secret, SecretString=json.dumps({"keys": [signing_key]})
    )
    api = await start_api(services, stack, aws, routes, web_session_secret=session_secret)
    return Web(api.url, api.stack, api.aws, api.keys, signing_key)


@pytest.fixture
async def web(
    stack: Stack, aws: dict[str, Any], services: InProcessServices, tmp_path: Path
) -> Web:
    """The whole delivery path (scanner, transfer-s3) and the API. The
    ``H8102`` route's bucket does not exist yet, so its files fail."""
    await aws["s3"].create_bucket(Bucket=f"{stack.name}-out")
    routes = write_routes(
        tmp_path / "routes.yaml",
        [
            s3_route(stack, DELIVERED, f"{stack.name}-out"),
            s3_route(stack, LATE, f"{stack.name}-late"),
        ],
    )
    start_scanner(services, stack, routes)
    services.start(
        run_transfer_s3,
        TransferSettings(
            stack=stack.name, routes_uri=str(routes), environment="test", receive_wait_seconds=1
        ),
    )
    return await start_web(services, stack, aws, routes)


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """Chromium with a fresh profile of its own."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            accept_downloads=True,
            timezone_id="America/New_York",
        )
        try:
            yield context
        finally:
            await context.close()


async def settled(web: Web, client_id: str, status: str) -> dict[str, Any]:
    async def look() -> dict[str, Any] | None:
        items = await ledger_items(web.aws["dynamodb"], web.stack, client_id)
        return items[0] if items and items[0]["status"] == status else None

    found = await eventually(look, timeout=60, what=f"{client_id} {status}")
    assert found is not None
    return found


async def downloaded(download: Download) -> bytes:
    return await asyncio.to_thread(Path(await download.path()).read_bytes)


async def sign_in(page: Page, web: Web, role: Role, *, keyboard: bool = False) -> None:
    await page.goto(f"{web.url}/web/")
    await expect(page).to_have_url(re.compile(r"/web/sign-in\?next="))
    if keyboard:  # the key field has the focus; Enter sends the form
        await page.keyboard.type(web.keys[role])
        await page.keyboard.press("Enter")
    else:
        await page.get_by_label("API key").fill(web.keys[role])
        await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Failures and health")).to_be_visible()


async def test_operator_downloads_a_delivered_file_and_resends_a_failed_one(
    web: Web, browser: BrowserContext
) -> None:
    s3 = web.aws["s3"]
    report = b"member_id,plan\n" + b"1,H8101-001\n" * 2000
    roster = b"member_id,roster\n" + b"7,late\n" * 500
    await s3.put_object(Bucket=web.stack.pickup_bucket, Key=f"{DELIVERED}/report.csv", Body=report)
    await s3.put_object(Bucket=web.stack.pickup_bucket, Key=f"{LATE}/roster.csv", Body=roster)
    await settled(web, DELIVERED, "success")
    await settled(web, LATE, "fail")

    page = await browser.new_page()
    await sign_in(page, web, Role.OPERATE)
    cookie = next(c for c in await browser.cookies() if c["name"] == SESSION_COOKIE)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert time.time() < cookie["expires"] <= time.time() + 8 * 3600 + 60
    assert web.keys[Role.OPERATE] not in cookie["value"]

    # Failures come first, the delivered file is found by a search.
    failed = page.get_by_role("table", name="Failed files")
    await expect(failed.get_by_role("link", name="roster.csv")).to_be_visible()
    await page.get_by_role("link", name="Files sent").click()
    await page.get_by_label("Client").select_option(DELIVERED)
    await page.get_by_label("Name contains").fill("report")
    await page.get_by_role("button", name="Show files").click()
    await page.get_by_role("link", name="report.csv").click()
    await expect(page.get_by_role("heading", name="report.csv")).to_be_visible()
    # Times in the viewer's zone (the browser's is New York), not the UTC fallback.
    await expect(page.locator("time").first).not_to_contain_text("UTC")
    await expect(page.get_by_text("America/New_York").first).to_be_visible()

    async with page.expect_download() as waiting:
        await page.get_by_role("button", name="Download report.csv").click()
    download = await waiting.value
    assert download.suggested_filename == "report.csv"
    assert await downloaded(download) == report
    await page.reload()
    await expect(page.get_by_text("Downloaded").first).to_be_visible()
    await expect(page.get_by_text("by operate-key").first).to_be_visible()

    # The destination is back: resend the failed file with a reason.
    await s3.create_bucket(Bucket=f"{web.stack.name}-late")
    await page.get_by_role("link", name="Failures and health").click()
    await page.get_by_role("link", name="roster.csv").click()
    await page.get_by_label("Why send it again?").fill("the partner's bucket exists now")
    await page.get_by_label(re.compile("Yes, send roster.csv")).check()
    await page.get_by_role("button", name="Resend").click()
    await expect(page.get_by_role("status")).to_contain_text("sent again")

    entry = await settled(web, LATE, "success")
    assert [a["outcome"] for a in entry["attempts"]] == ["fail", "success"]
    copy = await s3.get_object(Bucket=f"{web.stack.name}-late", Key="inbound/roster.csv")
    async with copy["Body"] as body:
        assert await body.read() == roster
    await page.reload()
    history = page.locator("ol.timeline")
    await expect(history).to_contain_text("Resent")
    await expect(history).to_contain_text("Reason: the partner's bucket exists now")
    await expect(history).to_contain_text("Delivered")


@dataclass
class Partner:
    """A partner's SFTP server (the sshd) polled by provider sync, and the page."""

    web: Web
    folder: Path
    source_id: str


@pytest.fixture
async def partner(
    stack: Stack,
    aws: dict[str, Any],
    services: InProcessServices,
    sshd: servers.Sshd,
    unique: str,
    tmp_path: Path,
) -> Partner:
    """Provider sync over a care-team source on the sshd, and the API."""
    source, folder = await sftp_source(stack, aws, sshd, f"acme-{unique}", "Acme Health")
    routes = write_routes(tmp_path / "routes.yaml", [], sources=[source])
    services.start(
        run_provider_sync,
        ProviderSyncSettings(
            stack=stack.name, routes_uri=str(routes), environment="test", receive_wait_seconds=1
        ),
    )
    return Partner(await start_web(services, stack, aws, routes), folder, source["id"])


async def test_the_care_team_sees_received_files_and_downloads_them(
    partner: Partner, browser: BrowserContext
) -> None:
    """A file on the partner's server, polled now through the API and landed
    by provider sync, is new on the care team's page and downloads whole."""
    web, source = partner.web, partner.source_id
    body = b"claim,amount\n" + b"1,20\n" * 100
    (partner.folder / "claims.csv").write_bytes(body)
    async with web.client(Role.OPERATE) as operator, web.client(Role.READ) as reader:
        polled = await operator.post(f"/sources/{source}/poll", json={"reason": "new report"})
        assert polled.status_code == 200, polled.text

        async def landed() -> list[dict[str, Any]]:
            page = await reader.get("/received", params={"source": source})
            items: list[dict[str, Any]] = page.json()["items"]
            return items

        (received,) = await eventually(landed, timeout=60, what="the partner's file to land")

    page = await browser.new_page()
    await sign_in(page, web, Role.READ, keyboard=True)
    await page.get_by_role("link", name="Files received").click()
    await expect(page.get_by_role("heading", name=re.compile("Acme Health"))).to_be_visible()
    row = page.get_by_role("row", name=re.compile("claims.csv"))
    await expect(row).to_contain_text("New")
    async with page.expect_download() as waiting:
        await row.get_by_role("button", name="Download claims.csv").click()
    download = await waiting.value
    assert download.suggested_filename == "claims.csv"
    assert await downloaded(download) == body
    # The search finds it by name, and finds nothing for another.
    await page.get_by_label("Name contains").fill("claims")
    await page.get_by_role("button", name="Search").click()
    await expect(page.get_by_role("row", name=re.compile("claims.csv"))).to_be_visible()
    await page.get_by_label("Name contains").fill("roster")
    await page.get_by_role("button", name="Search").click()
    await expect(page.get_by_text("No file matches")).to_be_visible()
    # A read key is shown no resend.
    assert await page.get_by_role("button", name="Resend").count() == 0

    subject = f"received/{source}/claims.csv#{received['sha256']}"
    records = await web.aws["dynamodb"].query(
        TableName=f"{web.stack.name}-locks",
        IndexName="bySubject",
        KeyConditionExpression="subject = :s",
        ExpressionAttributeValues={":s": {"S": subject}},
    )
    (record,) = records["Items"]
    assert (record["kind"]["S"], record["by"]["S"]) == ("download", "read-key")


class _Backdated(TimestampSigner):
    """Signs with a time nine hours ago: past the server's eight-hour session."""

    def get_timestamp(self) -> int:
        return int(time.time()) - 9 * 3600


def session_cookie(key: str, key_id: str = "operate-key", *, old: bool = False) -> str:
    """A session cookie made outside the server, as a forger would make one."""
    session = Session(key_id=key_id, principal=key_id, role="operate", csrf_nonce="n" * 24)
    signer = _Backdated if old else TimestampSigner
    serializer = URLSafeTimedSerializer(key, salt=SESSION_SALT, signer=signer)
    return serializer.dumps(session.model_dump())


async def test_forged_tampered_and_expired_sessions_and_missing_csrf_are_refused(
    web: Web,
) -> None:
    async with web.http() as http:
        good = session_cookie(web.signing_key)
        http.cookies.set(SESSION_COOKIE, good, path="/web")
        assert (await http.get("/web/")).status_code == 200

        payload, _, signature = good.rpartition(".")
        for bad in (
            session_cookie(secrets.token_urlsafe(32)),  # signed with another key
            f"{payload}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}",  # tampered
            session_cookie(web.signing_key, key_id="revoked-key"),  # a key no longer known
            session_cookie(web.signing_key, old=True),  # expired
        ):
            http.cookies.set(SESSION_COOKIE, bad, path="/web")
            response = await http.get("/web/files")
            assert response.status_code == 303, response.text
            assert response.headers["location"].startswith("/web/sign-in?next=")

        # A form without the session's CSRF token changes nothing.
        http.cookies.set(SESSION_COOKIE, good, path="/web")
        response = await http.post(
            "/web/file/resend",
            data={"client": LATE, "id": "sha256:00", "request_id": "x" * 16, "confirm": "yes"},
        )
        assert response.status_code == 403
        assert "This form has expired" in response.text
        response = await http.post("/web/sign-in", data={"api_key": web.keys[Role.ADMIN]})
        assert response.status_code == 403
        assert SESSION_COOKIE not in response.headers.get("set-cookie", "")

        # A read key's form, with its own valid token, still cannot resend.
        http.cookies.set(SESSION_COOKIE, session_cookie(web.signing_key, "read-key"), path="/web")
        token = SessionSigner([web.signing_key]).csrf_token("n" * 24)
        response = await http.post(
            "/web/file/resend",
            data={
                "client": LATE,
                "id": "sha256:00",
                "request_id": "x" * 16,
                "confirm": "yes",
                "reason": "try",
                "csrf_token": token,
            },
        )
        assert response.status_code == 403
        assert "operate role" in response.text


async def test_new_since_last_visit_survives_reloads_and_moves_on_after_a_visit(
    stack: Stack, aws: dict[str, Any]
) -> None:
    db, table, name = aws["dynamodb"], f"{stack.name}-locks", {"name": {"S": "web-visit/care-1"}}
    assert await last_visit(db, table, "care-1") is None  # a first visit: all is new
    assert await last_visit(db, table, "care-1") is None  # a reload within it: still
    # The visit began two hours ago: this page starts a new one, compared with it.
    earlier = iso_ago(7200)
    await db.update_item(
        TableName=table,
        Key=name,
        UpdateExpression="SET #c = :earlier",
        ExpressionAttributeNames={"#c": "current"},
        ExpressionAttributeValues={":earlier": {"S": earlier}},
    )
    assert await last_visit(db, table, "care-1") == earlier
    assert await last_visit(db, table, "care-1") == earlier  # and within the new visit
    item = (await db.get_item(TableName=table, Key=name, ConsistentRead=True))["Item"]
    assert item["previous"]["S"] == earlier
    assert item["current"]["S"] > earlier
    assert await last_visit(db, table, "care-2") is None  # each key has its own
