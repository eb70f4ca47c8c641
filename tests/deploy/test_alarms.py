"""The alarms would really fire: each one watches a metric under the namespace,
name and dimensions that something really emits (SQS for the stack's real
queues, the load balancer, or Conveyor's own EMF lines), and tells the ops
topic."""

from __future__ import annotations

import contextvars
import io
import json
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import yaml

from conveyor_cli.localstack import servers
from conveyor_shared import metrics
from conveyor_shared.delivery.service import TransferSettings
from conveyor_transfer_sftp.app import run as run_transfer_sftp
from tests.deploy.conftest import Deployment
from tests.support import (
    InProcessServices,
    Stack,
    eventually,
    ledger_items,
    sftp_route,
    start_scanner,
)


def _alarms(deployment: Deployment) -> list[dict[str, Any]]:
    cloudwatch = deployment.session.client("cloudwatch")
    prefix = f"{deployment.data.name}-"
    return [
        a
        for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=prefix)
        for a in page["MetricAlarms"]
        if not a["AlarmName"].startswith("TargetTracking")
    ]


def _queue_names(deployment: Deployment) -> set[str]:
    sqs = deployment.session.client("sqs")
    urls = sqs.list_queues(QueueNamePrefix=f"{deployment.data.name}-")["QueueUrls"]
    return {url.rsplit("/", 1)[-1] for url in urls}


def _dimensions(alarm: dict[str, Any]) -> dict[str, str]:
    return {d["Name"]: d["Value"] for d in alarm["Dimensions"]}


def test_every_alarm_tells_the_ops_topic(deployment: Deployment) -> None:
    alarms = _alarms(deployment)
    assert len(alarms) >= 15
    topic = deployment.data.outputs["AlarmTopicArn"]
    assert {tuple(a["AlarmActions"]) for a in alarms} == {(topic,)}


def test_queue_alarms_watch_the_stacks_real_queues(deployment: Deployment) -> None:
    queues = _queue_names(deployment)
    sqs_alarms = [a for a in _alarms(deployment) if a["Namespace"] == "AWS/SQS"]
    for alarm in sqs_alarms:
        assert _dimensions(alarm).keys() == {"QueueName"}, alarm["AlarmName"]
        assert _dimensions(alarm)["QueueName"] in queues, alarm["AlarmName"]
    watched = {(_dimensions(a)["QueueName"], a["MetricName"]) for a in sqs_alarms}
    dead_letter_queues = {q for q in queues if q.endswith("-dlq")}
    work_queues = queues - dead_letter_queues
    for queue in dead_letter_queues:
        assert {m for q, m in watched if q == queue}, f"no alarm on {queue}"
    for queue in work_queues:
        assert (queue, "ApproximateAgeOfOldestMessage") in watched, f"no age alarm on {queue}"


def test_dead_letters_consumed_at_once_still_raise_an_alarm(deployment: Deployment) -> None:
    """A transfer service settles its dead letters within seconds, so the queue is
    seldom non-empty when CloudWatch samples it; every receive from it counts."""
    watched = {
        _dimensions(a)["QueueName"]
        for a in _alarms(deployment)
        if a["MetricName"] == "NumberOfMessagesReceived" and a["Statistic"] == "Sum"
    }
    consumed = {
        q
        for q in _queue_names(deployment)
        if q.startswith(f"{deployment.data.name}-transfer-") and q.endswith("-dlq")
    }
    assert consumed
    assert consumed <= watched


def _emitted(emit: Any) -> dict[str, Any]:
    out = io.StringIO()

    def run() -> None:
        metrics.bind_service("stack-under-test", "transfer-sftp")
        emit(out)

    contextvars.copy_context().run(run)
    return dict(json.loads(out.getvalue()))


@pytest.mark.parametrize(
    ("metric", "emit"),
    [
        (metrics.FILES_FAILED, lambda out: metrics.emit(metrics.FILES_FAILED, 1, out=out)),
        (metrics.SOURCES_OVERDUE, lambda out: metrics.emit(metrics.SOURCES_OVERDUE, 2, out=out)),
    ],
)
def test_metric_alarms_match_what_the_services_emit(
    deployment: Deployment, metric: str, emit: Any
) -> None:
    line = _emitted(emit)
    [directive] = line["_aws"]["CloudWatchMetrics"]
    [alarm] = [a for a in _alarms(deployment) if a["MetricName"] == metric]
    assert alarm["Namespace"] == directive["Namespace"]
    assert [m["Name"] for m in directive["Metrics"]] == [metric]
    dimensions = _dimensions(alarm)
    assert sorted(dimensions) in [sorted(d) for d in directive["Dimensions"]]
    assert dimensions == {"Stack": deployment.data.name}
    assert line["Stack"] == "stack-under-test"
    assert isinstance(line[metric], int | float)


def test_api_errors_alarm_watches_the_load_balancer(deployment: Deployment) -> None:
    [alarm] = [a for a in _alarms(deployment) if a["Namespace"] == "AWS/ApplicationELB"]
    elb = deployment.session.client("elbv2")
    [balancer] = elb.describe_load_balancers(Names=[f"{deployment.data.name}-api"])["LoadBalancers"]
    assert alarm["MetricName"] == "HTTPCode_Target_5XX_Count"
    assert _dimensions(alarm) == {
        "LoadBalancer": balancer["LoadBalancerArn"].split(":loadbalancer/")[1]
    }


async def test_a_failed_file_emits_files_failed(
    stack: Stack,
    aws: dict[str, Any],
    services: InProcessServices,
    sshd: servers.Sshd,
    tmp_path: Path,
    unique: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A real permanent failure (a host key that is not the server's) is a
    FilesFailed line with the dimensions the alarm watches."""
    stranger = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    client = "H3001"
    routes = await sftp_route(
        stack, aws, sshd, tmp_path / "routes.yaml", client, f"in-{unique}", sshd.port
    )
    document = yaml.safe_load(routes.read_text())
    document["routes"][0]["destination"]["host_keys"] = [stranger]
    routes.write_text(yaml.safe_dump(document))
    start_scanner(services, stack, routes)
    services.start(
        run_transfer_sftp,
        TransferSettings(
            stack=stack.name, routes_uri=str(routes), environment="test", receive_wait_seconds=1
        ),
    )
    await aws["s3"].put_object(Bucket=stack.pickup_bucket, Key=f"{client}/a.csv", Body=b"a\n")

    errors: list[str] = []

    async def failed_and_counted() -> bool:
        errors.extend(capsys.readouterr().err.splitlines())
        items = await ledger_items(aws["dynamodb"], stack, client)
        return bool(items) and items[0]["status"] == "fail" and any(_is_failure(e) for e in errors)

    await eventually(failed_and_counted, what="the file settled fail and counted")
    failures = [json.loads(line) for line in errors if _is_failure(line)]
    assert len(failures) == 1
    assert (failures[0]["Stack"], failures[0]["Service"]) == (stack.name, "transfer-sftp")


def _is_failure(line: str) -> bool:
    return '"_aws"' in line and f'"{metrics.FILES_FAILED}"' in line
