"""Each service's task role (deploy/services.yaml) allows every AWS call the
service made in the integration tests (tests/deploy/aws_calls.json, recorded
by ``python -m tests.deploy.record_calls``) and nothing on another service's
queues or secrets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conveyor_cli.localstack.deploy import load_template
from tests.deploy.iam import ACCOUNT, DEPLOY, REGION, STACK, Request, allows, task_policies

CALLS = json.loads((Path(__file__).with_name("aws_calls.json")).read_text())
POLICIES = task_policies()
#: Services the integration tests run; each must have recorded calls.
RECORDED = [
    "scanner",
    "transfer-gcs",
    "transfer-sftp",
    "transfer-ftp",
    "transfer-s3",
    "notifier",
    "provider-sync",
    "api",
]
#: A call each service cannot work without: a recording that lacks it is not one.
ESSENTIAL = {service: "sqs:ReceiveMessage" for service in RECORDED} | {"api": "dynamodb:Query"}
#: What only its own service may do: take messages off its queues, read its secrets.
OWN_QUEUES = {
    "scanner": ["scanner", "scanner-dlq"],
    "transfer-gcs": ["transfer-gcs", "transfer-gcs-dlq"],
    "transfer-sftp": ["transfer-sftp", "transfer-sftp-dlq"],
    "transfer-s3": ["transfer-s3", "transfer-s3-dlq"],
    "transfer-ftp": ["transfer-ftp", "transfer-ftp-dlq"],
    "notifier": ["notifier", "notifier-dlq"],
    "provider-sync": ["sync-poll", "sync-poll-dlq", "sync-fetch", "sync-fetch-dlq"],
    "api": [],
}
OWN_SECRETS = {
    "scanner": [],
    "transfer-gcs": ["gcs-key"],
    "transfer-sftp": ["sftp-H1001"],
    "transfer-s3": ["s3"],
    "transfer-ftp": ["ftp"],
    "notifier": ["smtp", "slack-ops"],
    "provider-sync": ["sync-partner"],
    "api": ["api-keys"],
}
#: Secrets another service reads on purpose: a provider source's credentials,
#: read by provider sync to poll and by the API to check, test and plan a source.
SHARED_SECRETS = {"sync-partner": {"api"}}
#: Queues another service takes messages off on purpose: the API's redrive takes the
#: dead letters off each dead-letter queue to send them back to work (docs/operations.md);
#: provider sync's dead letters are asked for again by its own polls instead.
SHARED_QUEUES = {
    queue: {"api"}
    for queues in OWN_QUEUES.values()
    for queue in queues
    if queue.endswith("-dlq") and not queue.startswith("sync-")
}
CONSUMER_ACTIONS = [
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:PurgeQueue",
]


def test_every_service_has_a_task_policy() -> None:
    assert sorted(POLICIES) == sorted(OWN_QUEUES)


@pytest.mark.parametrize("service", RECORDED)
def test_recorded_calls_cover_the_service(service: str) -> None:
    actions = {c["action"] for c in CALLS if c["service"] == service}
    # The queue services consume their queues; the API lists files from the ledger.
    assert ESSENTIAL[service] in actions, f"no recorded calls of {service}; re-record"


@pytest.mark.parametrize("service", RECORDED)
def test_policy_allows_every_recorded_call(service: str) -> None:
    calls = [c for c in CALLS if c["service"] == service]
    denied = [
        c for c in calls if not allows(POLICIES[service], Request(c["action"], c["resource"]))
    ]
    assert calls
    assert denied == []


@pytest.mark.parametrize("service", sorted(OWN_QUEUES))
def test_policy_allows_nothing_on_another_services_queues_or_secrets(service: str) -> None:
    reached = []
    for other in OWN_QUEUES:
        if other == service:
            continue
        for queue in OWN_QUEUES[other]:
            if service in SHARED_QUEUES.get(queue, ()):
                continue
            arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{STACK}-{queue}"
            reached += [a for a in CONSUMER_ACTIONS if allows(POLICIES[service], Request(a, arn))]
        for secret in OWN_SECRETS[other]:
            if service in SHARED_SECRETS.get(secret, ()):
                continue
            arn = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{STACK}/{secret}-AbCdEf"
            request = Request("secretsmanager:GetSecretValue", arn)
            reached += [arn] if allows(POLICIES[service], request) else []
    assert reached == []


@pytest.mark.parametrize("service", sorted(OWN_QUEUES))
def test_policy_reaches_its_own_queues_and_secrets(service: str) -> None:
    """The ownership above is real: each service may take its own messages and secrets."""
    for queue in OWN_QUEUES[service]:
        arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{STACK}-{queue}"
        assert all(allows(POLICIES[service], Request(a, arn)) for a in CONSUMER_ACTIONS[:3])
    for secret in OWN_SECRETS[service]:
        arn = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{STACK}/{secret}-AbCdEf"
        assert allows(POLICIES[service], Request("secretsmanager:GetSecretValue", arn))


def _task_statements() -> list[dict[str, Any]]:
    template = load_template(DEPLOY / "services.yaml")
    return [
        statement
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::IAM::Role"
        for policy in resource["Properties"].get("Policies", [])
        for statement in policy["PolicyDocument"]["Statement"]
    ]


def test_statements_are_plain_allows_with_partition_agnostic_arns() -> None:
    statements = _task_statements()
    assert statements
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert "Condition" not in statement
        assert "NotResource" not in statement
        for resource in statement["Resource"]:
            assert resource["Fn::Sub"].startswith("arn:${AWS::Partition}:"), resource
        assert "*" not in statement["Action"]
