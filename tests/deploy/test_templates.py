"""Both templates deploy into moto in server mode, and what they deploy is what
production needs: one Fargate service per Conveyor service, scaled on its own
queue, stopped slower than it drains; the ledger and pick-up kept (D11)."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import pytest

from conveyor_shared.delivery.service import TransferSettings
from conveyor_shared.sync.messages import PollRequested, parse_command
from tests.deploy.conftest import SERVICES_TEMPLATE, Deployment
from tests.deploy.iam import DEPLOY


def _renderer() -> object:
    spec = importlib.util.spec_from_file_location("render_services", DEPLOY / "render_services.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_services"] = module
    spec.loader.exec_module(module)
    return module


RENDER = _renderer()
SERVICES = RENDER.SERVICES  # type: ignore[attr-defined]
NAMES = [service.name for service in SERVICES]


def test_services_template_is_the_current_rendering() -> None:
    assert SERVICES_TEMPLATE.read_text() == RENDER.render(), (  # type: ignore[attr-defined]
        "run: uv run python deploy/render_services.py"
    )


def test_one_fargate_service_per_conveyor_service(deployment: Deployment) -> None:
    ecs = deployment.session.client("ecs")
    cluster = deployment.compute.outputs["ClusterName"]
    arns = ecs.list_services(cluster=cluster)["serviceArns"]
    assert sorted(arn.rsplit("/", 1)[-1] for arn in arns) == sorted(NAMES)
    # moto's CloudFormation keeps the containers but drops a service's launch type and
    # a task definition's compatibilities, network mode and task role: read those here.
    resources = list(RENDER.template()["Resources"].values())  # type: ignore[attr-defined]
    kinds = {r["Properties"]["LaunchType"] for r in resources if r["Type"] == "AWS::ECS::Service"}
    definitions = [r["Properties"] for r in resources if r["Type"] == "AWS::ECS::TaskDefinition"]
    assert kinds == {"FARGATE"}
    assert len(definitions) == len(NAMES)
    for definition in definitions:
        assert definition["RequiresCompatibilities"] == ["FARGATE"]
        assert definition["NetworkMode"] == "awsvpc"
        assert "TaskRoleArn" in definition


@pytest.mark.parametrize("name", NAMES)
def test_container_stops_slower_than_the_drain_bound(deployment: Deployment, name: str) -> None:
    ecs = deployment.session.client("ecs")
    family = f"{deployment.data.name}-{name}"
    container = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"][
        "containerDefinitions"
    ][0]
    drain = TransferSettings.model_fields["drain_seconds"].default
    assert container["stopTimeout"] > drain
    assert container["logConfiguration"]["options"]["awslogs-group"] == (
        f"/conveyor/{deployment.data.name}/{name}"
    )
    environment = {e["name"]: e["value"] for e in container["environment"]}
    assert environment["CONVEYOR_STACK"] == deployment.data.name


def test_log_groups_have_retention(deployment: Deployment) -> None:
    logs = deployment.session.client("logs")
    prefix = f"/conveyor/{deployment.data.name}/"
    groups = logs.describe_log_groups(logGroupNamePrefix=prefix)["logGroups"]
    assert sorted(g["logGroupName"].removeprefix(prefix) for g in groups) == sorted(NAMES)
    assert {g.get("retentionInDays") for g in groups} == {30}


def test_queue_services_scale_on_their_own_backlog_and_age(deployment: Deployment) -> None:
    scaling = deployment.session.client("application-autoscaling")
    cluster = deployment.compute.outputs["ClusterName"]
    targets = scaling.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]
    mine = [t["ResourceId"] for t in targets if t["ResourceId"].startswith(f"service/{cluster}/")]
    assert sorted(mine) == sorted(f"service/{cluster}/{name}" for name in NAMES)
    policies = scaling.describe_scaling_policies(ServiceNamespace="ecs")["ScalingPolicies"]
    queues = {f"service/{cluster}/{s.name}": s.queue for s in SERVICES if s.queue}
    for resource, queue in queues.items():
        mine = [p for p in policies if p["ResourceId"] == resource]
        assert len(mine) == 2, resource
        queue_name = f"{deployment.data.name}-{queue}"
        dimensions = [
            dimension
            for policy in mine
            for metric in _metrics(policy)
            for dimension in metric.get("Dimensions", [])
            if dimension["Name"] == "QueueName"
        ]
        assert {d["Value"] for d in dimensions} == {queue_name}
    sqs = deployment.session.client("sqs")
    for queue in queues.values():
        sqs.get_queue_url(QueueName=f"{deployment.data.name}-{queue}")  # a real queue


def _metrics(policy: dict[str, Any]) -> list[dict[str, Any]]:
    spec = policy["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]
    if "Metrics" in spec:
        return [m["MetricStat"]["Metric"] for m in spec["Metrics"] if "MetricStat" in m]
    return [spec]


def test_scans_run_on_the_scheduler_into_the_scanner_queue(deployment: Deployment) -> None:
    scheduler = deployment.session.client("scheduler")
    schedule = scheduler.get_schedule(Name=f"{deployment.data.name}-scan")
    assert schedule["ScheduleExpression"] == "rate(15 minutes)"
    assert schedule["Target"]["Arn"].endswith(f":{deployment.data.name}-scanner")
    assert '"scan.requested"' in schedule["Target"]["Input"]


def test_provider_polls_run_on_the_scheduler_as_one_tick_for_every_source(
    deployment: Deployment,
) -> None:
    scheduler = deployment.session.client("scheduler")
    schedule = scheduler.get_schedule(Name=f"{deployment.data.name}-sync-poll")
    assert schedule["ScheduleExpression"] == "rate(1 minute)"
    assert schedule["Target"]["Arn"].endswith(f":{deployment.data.name}-sync-poll")
    command = parse_command(schedule["Target"]["Input"])
    # No source named: provider-sync answers with one poll message per source.
    assert isinstance(command, PollRequested)
    assert command.source_id is None
    assert not command.force
    deployment.session.client("sqs").get_queue_url(QueueName=f"{deployment.data.name}-sync-poll")
    rules = deployment.session.client("events").list_rules(NamePrefix=deployment.data.name)
    assert rules["Rules"] == [], "one schedule, not an EventBridge rule as well"


def test_the_schedules_role_sends_only_to_their_targets() -> None:
    resources = RENDER.template()["Resources"]  # type: ignore[attr-defined]
    schedules = [
        r["Properties"] for r in resources.values() if r["Type"] == "AWS::Scheduler::Schedule"
    ]
    assert {s["Target"]["RoleArn"]["Fn::GetAtt"][0] for s in schedules} == {"SchedulerRole"}
    [policy] = resources["SchedulerRole"]["Properties"]["Policies"]
    statements = policy["PolicyDocument"]["Statement"]
    assert {a for s in statements for a in s["Action"]} == {"sqs:SendMessage"}
    allowed = [r for s in statements for r in s["Resource"]]
    assert sorted(map(str, allowed)) == sorted(str(s["Target"]["Arn"]) for s in schedules)


def test_ledger_tables_are_kept_protected_and_recoverable(deployment: Deployment) -> None:
    dynamodb = deployment.session.client("dynamodb")
    tables = [
        t for t in dynamodb.list_tables()["TableNames"] if t.startswith(f"{deployment.data.name}-")
    ]
    assert len(tables) >= 4
    for table in tables:
        assert dynamodb.describe_table(TableName=table)["Table"]["DeletionProtectionEnabled"]
        backups = dynamodb.describe_continuous_backups(TableName=table)
        pitr = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
        assert pitr["PointInTimeRecoveryStatus"] == "ENABLED", table


def test_pickup_bucket_is_encrypted_and_private(deployment: Deployment) -> None:
    s3 = deployment.session.client("s3")
    bucket = deployment.data.outputs["PickupBucket"]
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    assert len(block) == 4
