"""docs/operations.md works: every command of its procedures, exactly as the
markdown shows it (tests.deploy.runbook), runs against the local stack and
does what the runbook says. The scanner, transfer-sftp and the API run
in-process against moto, delivering to OpenSSH's sshd through a proxy the
tests open and close (the partner's server up or down); the routes file is
read from S3, as in production."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import boto3
import pytest
import yaml

from conveyor_api.auth import Role
from conveyor_cli.localstack import servers
from conveyor_cli.localstack.deploy import load_template
from conveyor_cli.localstack.processes import free_port
from conveyor_shared.delivery.service import TransferSettings
from conveyor_transfer_sftp.app import run as run_transfer_sftp
from tests.api_support import Api, start_api
from tests.deploy.conftest import SERVICES_TEMPLATE, Deployment
from tests.deploy.iam import DEPLOY
from tests.deploy.runbook import DOC, Runbook, section_commands
from tests.support import InProcessServices, Stack, TcpProxy, eventually, sftp_route, start_scanner

CLIENT = "H7201"


@dataclass
class Operations:
    """The local stack as an operator meets it: services running, the API
    answering the ``conveyor`` command, a runbook shell with its variables."""

    api: Api
    runbook: Runbook
    sshd: servers.Sshd
    port: int
    folder: Path
    routes: dict[str, Any]
    aws: dict[str, Any]

    def partner_up(self) -> TcpProxy:
        return TcpProxy(self.sshd.port, port=self.port)

    async def drop(self, name: str, body: bytes) -> str:
        await self.aws["s3"].put_object(
            Bucket=self.api.stack.pickup_bucket, Key=f"{CLIENT}/{name}", Body=body
        )
        return f"sha256:{hashlib.sha256(body).hexdigest()}"

    async def settled(self, content_id: str, attempts: int, status: str) -> dict[str, Any]:
        async def check() -> dict[str, Any]:
            async with self.api.client(Role.READ) as reader:
                response = await reader.get(f"/files/{CLIENT}/{content_id}")
            state: dict[str, Any] = response.json() if response.status_code == 200 else {}
            done = state.get("status") == status and len(state.get("attempts", [])) >= attempts
            return state if done else {}

        return await eventually(check, timeout=90, what=f"{status} after {attempts} attempts")


@pytest.fixture
async def ops(
    stack: Stack,
    aws: dict[str, Any],
    services: InProcessServices,
    sshd: servers.Sshd,
    tmp_path: Path,
) -> Operations:
    port = free_port()  # nothing listens until a test opens the proxy: the partner is down
    folder = sshd.root / f"inbound-{tmp_path.name}"
    folder.mkdir(parents=True)
    local = await sftp_route(
        stack,
        aws,
        sshd,
        tmp_path / "first-routes.yaml",
        CLIENT,
        folder.name,
        port,
        after_delivery="keep",
        retry_delays_seconds=[1, 1],
    )
    config = f"{stack.name}-config"
    await aws["s3"].create_bucket(Bucket=config)
    await aws["s3"].put_object(Bucket=config, Key="routes.yaml", Body=local.read_bytes())
    routes_uri = f"s3://{config}/routes.yaml"
    start_scanner(services, stack, routes_uri)
    services.start(
        run_transfer_sftp,
        TransferSettings(
            stack=stack.name,
            routes_uri=routes_uri,
            environment="test",
            receive_wait_seconds=1,
            lease_seconds=6,
        ),
    )
    api = await start_api(services, stack, aws, routes_uri)
    runbook = Runbook(
        boto3.Session(region_name="us-east-1"),
        tmp_path,
        {"STACK": stack.name, "CLIENT": CLIENT, "CONFIG_BUCKET": config},
        {"CONVEYOR_API_URL": api.url, "CONVEYOR_API_KEY": api.keys[Role.OPERATE]},
    )
    return Operations(api, runbook, sshd, port, folder, yaml.safe_load(local.read_text()), aws)


async def test_dead_letters_are_redriven_once_the_partner_is_back(ops: Operations) -> None:
    body = b"eligibility\n" * 4000
    content_id = await ops.drop("elig.txt", body)
    failed = await ops.settled(content_id, attempts=3, status="fail")
    assert failed["errorKind"] in {"transient", "exhausted"}

    async with ops.partner_up():
        outputs = [await ops.runbook.run(line) for line in section_commands("Dead letters")]
        delivered = await ops.settled(content_id, attempts=4, status="success")
    assert (ops.folder / "elig.txt").read_bytes() == body
    assert "elig.txt" in outputs[1], "the failed file is listed"
    assert outputs[-1].startswith("moved 0, resent 1,"), outputs[-1]
    assert delivered["actions"][0]["reason"] == "partner server is back"


async def test_a_file_and_then_its_job_are_sent_again(ops: Operations) -> None:
    body = b"member,claim\n1,100\n" * 500
    lines = section_commands("Sending a file again")
    async with ops.partner_up():
        content_id = await ops.drop("claims.csv", body)
        first = await ops.settled(content_id, attempts=1, status="success")
        (ops.folder / "claims.csv").unlink()  # the partner lost it
        ops.runbook.variables["FILE_ID"] = f"{CLIENT}/{content_id}"

        listed = await ops.runbook.run(lines[0])
        assert content_id[:20] in listed.replace("\n", "") or "claims.csv" in listed
        assert "claims.csv" in await ops.runbook.run(lines[1])
        assert "resent 1 of 1" in await ops.runbook.run(lines[2])
        second = await ops.settled(content_id, attempts=2, status="success")
        assert (ops.folder / "claims.csv").read_bytes() == body
        (ops.folder / "claims.csv").unlink()
        # The file's job is now the resend's, as `conveyor file` shows.
        ops.runbook.variables["JOB_ID"] = second["jobId"]
        assert second["jobId"] in await ops.runbook.run(lines[1])
        assert "resent 1 of 1" in await ops.runbook.run(lines[3])
        third = await ops.settled(content_id, attempts=3, status="success")
        assert "dry run: 0 match" in await ops.runbook.run(lines[4])
    assert (ops.folder / "claims.csv").read_bytes() == body
    assert len({first["jobId"], second["jobId"], third["jobId"]}) == 3
    assert [a["reason"] for a in third["actions"]][:2] == [
        "partner lost the batch",
        "partner lost the file",
    ]
    assert len(lines) == 5


async def test_a_rotated_secret_is_used_for_the_next_send(ops: Operations) -> None:
    secret = f"{ops.api.stack.name}/sftp-{CLIENT}"
    stale = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    await ops.aws["secretsmanager"].put_secret_value(
        SecretId=secret, SecretString=json.dumps({"private_key": stale})
    )
    body = b"report\n" * 100
    async with ops.partner_up():
        content_id = await ops.drop("report.txt", body)
        refused = await ops.settled(content_id, attempts=1, status="fail")
        assert refused["errorKind"] == "permanent", refused
        (ops.runbook.workdir / "new-credentials.json").write_text(
            json.dumps({"private_key": ops.sshd.private_key})
        )
        ops.runbook.variables["FILE_ID"] = f"{CLIENT}/{content_id}"
        for line in section_commands("Rotating a secret"):
            await ops.runbook.run(line)
        await ops.settled(content_id, attempts=2, status="success")
    assert (ops.folder / "report.txt").read_bytes() == body


async def test_a_new_client_and_a_new_provider_are_live_after_the_upload(
    ops: Operations, unique: str
) -> None:
    new_client, source = "H7202", f"partner-{unique}"
    routes = ops.routes
    destination = {**routes["routes"][0]["destination"], "port": ops.port}
    destination["credentials"] = {"secret": f"{ops.api.stack.name}/sftp-{new_client}"}
    routes["routes"].append(
        {
            **routes["routes"][0],
            "name": f"client {new_client}",
            "client_id": new_client,
            "pickup": f"s3://{ops.api.stack.pickup_bucket}/{new_client}/",
            "destination": destination,
        }
    )
    listing = ops.sshd.root / f"outbound-{unique}"
    listing.mkdir()
    routes["sources"] = [
        {
            "id": source,
            "name": "New partner",
            "partner_id": new_client,
            "protocol": "sftp",
            "host": "127.0.0.1",
            "port": ops.port,
            "username": ops.sshd.username,
            "credentials": {"secret": f"{ops.api.stack.name}/sync-{source}"},
            "host_keys": [ops.sshd.host_key],
            "directory": listing.name,
            "landing": f"s3://{ops.api.stack.pickup_bucket}/landing/",
            "audience": "care_team",
        }
    ]
    workdir = ops.runbook.workdir
    (workdir / "routes.yaml").write_text(yaml.safe_dump(routes, sort_keys=False))
    key = json.dumps({"private_key": ops.sshd.private_key})
    (workdir / "credentials.json").write_text(key)
    (workdir / "source-credentials.json").write_text(key)
    ops.runbook.variables |= {"CLIENT": new_client, "SOURCE": source}

    lines = section_commands("Adding a client or a provider")
    upload = next(i for i, line in enumerate(lines) if "put-object" in line)
    async with ops.partner_up():
        for line in lines[: upload + 1]:
            await ops.runbook.run(line)
        # The services read the routes file again within 30 s.
        outputs = [await ops.runbook.run_until_ok(line, timeout=45) for line in lines[upload + 1 :]]
    assert new_client in outputs[0]
    assert outputs[1].startswith("ok"), outputs[1]
    assert outputs[2].startswith("ok: 0 file(s)"), outputs[2]
    assert len(outputs) == 4
    sqs = ops.aws["sqs"]
    url = (await sqs.get_queue_url(QueueName=f"{ops.api.stack.name}-sync-poll"))["QueueUrl"]
    polls = (await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10))["Messages"]
    asked = [json.loads(m["Body"]) for m in polls]
    assert [(a["source_id"], a["force"]) for a in asked] == [(source, True)]


def _cluster_variables(deployment: Deployment) -> dict[str, str]:
    return {"STACK": deployment.data.name, "CLUSTER": deployment.compute.outputs["ClusterName"]}


async def test_scaling_gives_a_service_more_room(deployment: Deployment, tmp_path: Path) -> None:
    runbook = Runbook(deployment.session, tmp_path, _cluster_variables(deployment))
    lines = section_commands("Scaling")
    for line in lines:
        await runbook.run(line)
    scaling = deployment.session.client("application-autoscaling")
    resource = f"service/{runbook.variables['CLUSTER']}/transfer-sftp"
    [target] = scaling.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[resource])[
        "ScalableTargets"
    ]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 20)
    parameters = load_template(SERVICES_TEMPLATE)["Parameters"]
    named = re.findall(r"`(\w+(?:Min|Max)Tasks)`", DOC.read_text().split("## Scaling\n", 1)[1])
    assert named
    assert set(named) <= set(parameters), "the runbook names the template's parameters"


def _alarm_names() -> Iterator[str]:
    for template in ("conveyor.yaml", "services.yaml"):
        for resource in load_template(DEPLOY / template)["Resources"].values():
            if resource["Type"] == "AWS::CloudWatch::Alarm":
                name = resource["Properties"]["AlarmName"]["Fn::Sub"]
                yield re.sub(r"^\$\{(AWS::StackName|DataStackName)\}-", "", name)


def test_every_alarm_has_a_row_in_the_runbook() -> None:
    watch = DOC.read_text().split("## What to watch\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `<stack>-([^`]+)` \|", watch, flags=re.MULTILINE)
    # A row may stand for several alarms: <type> a destination type, <queue> any queue.
    wildcards = {"<type>": "[a-z0-9]+", "<queue>": "[a-z0-9-]+"}
    patterns = [
        re.compile(re.sub("|".join(wildcards), lambda m: wildcards[m.group(0)], re.escape(row)))
        for row in rows
    ]
    missing = [n for n in _alarm_names() if not any(p.fullmatch(n) for p in patterns)]
    assert missing == []


async def test_the_ledger_restore_brings_every_entry_back(stack: Stack, unique: str) -> None:
    session = boto3.Session(region_name="us-east-1")
    dynamodb = session.client("dynamodb")
    table = f"{stack.name}-files"
    entries = [
        {
            "clientId": {"S": "H1001"},
            "contentId": {"S": f"sha256:{n:064x}"},
            "status": {"S": "success"},
            "fileName": {"S": f"claims-{n}.csv"},
            "sendAttempts": {"N": "1"},
        }
        for n in range(25)
    ]
    for entry in entries:
        dynamodb.put_item(TableName=table, Item=entry)
    variables = {"STACK": stack.name, "EXPORT_BUCKET": f"{stack.name}-exports-{unique}"}
    runbook = Runbook(session, Path.cwd(), variables)

    for line in section_commands("Restoring the ledger"):
        await runbook.run(line)

    restored = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    key = lambda item: item["contentId"]["S"]  # noqa: E731
    assert sorted(restored, key=key) == sorted(entries, key=key)
    description = dynamodb.describe_table(TableName=table)["Table"]
    assert description["DeletionProtectionEnabled"] is True
    pitr = dynamodb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    assert pitr["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    assert {i["IndexName"] for i in description["GlobalSecondaryIndexes"]} >= {"byJob", "active"}
    exports = dynamodb.list_exports(TableArn=variables["TABLE_ARN"])["ExportSummaries"]
    assert len(exports) == 1
