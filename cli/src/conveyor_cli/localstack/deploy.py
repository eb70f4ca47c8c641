"""Deploy ``deploy/conveyor.yaml`` into moto, so the local stack and production
share one template and cannot drift.

moto's CloudFormation reports success but silently skips a few resource
kinds (listed below). After ``create_stack`` this module
applies exactly those, read from the same template, through the service APIs:
bucket notification, versioning and lifecycle configurations, SQS queue
policies, SNS subscriptions, a bucket's public access block, DynamoDB
time-to-live and point-in-time recovery settings, and for
``deploy/services.yaml`` CloudWatch alarms, Application Auto Scaling targets
and policies and EventBridge Scheduler schedules (which moto keeps but never
fires). Each is applied only if it is missing, so a moto that starts
supporting one does not get it twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import yaml

TEMPLATE = Path(__file__).resolve().parents[4] / "deploy" / "conveyor.yaml"


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that understands CloudFormation's short-form tags."""


def _tag(name: str) -> Callable[[yaml.Loader, yaml.Node], dict[str, Any]]:
    def construct(loader: yaml.Loader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if name == "Fn::GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {name: value}

    return construct


for _short in ("Ref", "GetAtt", "Sub", "Join", "Select", "Split", "If", "Equals", "Not"):
    _CfnLoader.add_constructor(f"!{_short}", _tag("Ref" if _short == "Ref" else f"Fn::{_short}"))


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    template: dict[str, Any] = yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506
    return template


@dataclass
class _Resolver:
    """Just enough of CloudFormation's intrinsic functions for our template."""

    template: Mapping[str, Any]
    parameters: Mapping[str, str]
    pseudo: Mapping[str, str]
    physical: Mapping[str, str]

    def _type(self, logical: str) -> str:
        return str(self.template["Resources"][logical]["Type"])

    def ref(self, name: str) -> str:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self.physical[name]

    def get_att(self, logical: str, attribute: str) -> str:
        kind, physical = self._type(logical), self.physical[logical]
        region, account = self.pseudo["AWS::Region"], self.pseudo["AWS::AccountId"]
        if kind == "AWS::SQS::Queue":
            name = physical.rsplit("/", 1)[-1]
            return {
                "Arn": f"arn:aws:sqs:{region}:{account}:{name}",
                "QueueName": name,
                "QueueUrl": physical,
            }[attribute]
        if kind == "AWS::SNS::Topic":
            return {"TopicArn": physical, "TopicName": physical.rsplit(":", 1)[-1]}[attribute]
        if kind == "AWS::S3::Bucket" and attribute == "Arn":
            return f"arn:aws:s3:::{physical}"
        if kind == "AWS::IAM::Role" and attribute == "Arn":
            return f"arn:aws:iam::{account}:role/{physical}"
        if kind == "AWS::ECS::Service" and attribute == "Name":
            return physical.rsplit("/", 1)[-1]
        if kind == "AWS::ElasticLoadBalancingV2::LoadBalancer":
            full_name = physical.split(":loadbalancer/", 1)[-1]
            return {"LoadBalancerFullName": full_name, "LoadBalancerName": full_name.split("/")[1]}[
                attribute
            ]
        raise KeyError(f"{logical}.{attribute} is not supported by the local deployer")

    def sub(self, text: str) -> str:
        import re

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            return self.get_att(*name.split(".", 1)) if "." in name else self.ref(name)

        return re.sub(r"\$\{([^}!]+)\}", replace, text)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            return self.ref(value["Ref"])
        if set(value) == {"Fn::GetAtt"}:
            return self.get_att(*value["Fn::GetAtt"])
        if set(value) == {"Fn::Sub"}:
            return self.sub(value["Fn::Sub"])
        return {k: self.resolve(v) for k, v in value.items()}


@dataclass
class DeployedStack:
    name: str
    outputs: dict[str, str]
    physical: dict[str, str]


def _apply_bucket_notifications(
    session: boto3.Session, resolver: _Resolver, logical: str, props: Mapping[str, Any]
) -> None:
    config = resolver.resolve(props.get("NotificationConfiguration") or {})
    if not config.get("QueueConfigurations"):
        return
    s3 = session.client("s3")
    bucket = resolver.physical[logical]
    if s3.get_bucket_notification_configuration(Bucket=bucket).get("QueueConfigurations"):
        return
    queues = []
    for item in config["QueueConfigurations"]:
        entry: dict[str, Any] = {"QueueArn": item["Queue"], "Events": [item["Event"]]}
        rules = item.get("Filter", {}).get("S3Key", {}).get("Rules")
        if rules:
            entry["Filter"] = {"Key": {"FilterRules": rules}}
        queues.append(entry)
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": queues}
    )


def _apply_bucket_versioning(
    session: boto3.Session, resolver: _Resolver, logical: str, props: Mapping[str, Any]
) -> None:
    s3 = session.client("s3")
    bucket = resolver.physical[logical]
    status = props.get("VersioningConfiguration", {}).get("Status")
    if status and s3.get_bucket_versioning(Bucket=bucket).get("Status") != status:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})
    rules = props.get("LifecycleConfiguration", {}).get("Rules")
    if not rules:
        return
    try:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
        return
    except s3.exceptions.ClientError:
        pass
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [_lifecycle_rule(rule) for rule in rules]}
    )


def _apply_public_access_block(
    session: boto3.Session, resolver: _Resolver, logical: str, props: Mapping[str, Any]
) -> None:
    block = props.get("PublicAccessBlockConfiguration")
    if not block:
        return
    s3 = session.client("s3")
    bucket = resolver.physical[logical]
    try:
        s3.get_public_access_block(Bucket=bucket)
        return
    except s3.exceptions.ClientError:
        pass
    s3.put_public_access_block(
        Bucket=bucket, PublicAccessBlockConfiguration={k: bool(v) for k, v in block.items()}
    )


def _lifecycle_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    """CloudFormation's lifecycle rule shape, in the S3 API's."""
    api: dict[str, Any] = {"ID": rule["Id"], "Status": rule["Status"], "Filter": {"Prefix": ""}}
    if "NoncurrentVersionExpiration" in rule:
        api["NoncurrentVersionExpiration"] = {
            "NoncurrentDays": int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])
        }
    if "AbortIncompleteMultipartUpload" in rule:
        api["AbortIncompleteMultipartUpload"] = {
            "DaysAfterInitiation": int(
                rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
            )
        }
    return api


def _apply_queue_policy(
    session: boto3.Session, resolver: _Resolver, props: Mapping[str, Any]
) -> None:
    sqs = session.client("sqs")
    policy = json.dumps(resolver.resolve(props["PolicyDocument"]))
    for url in resolver.resolve(props["Queues"]):
        current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])
        if "Policy" not in current.get("Attributes", {}):
            sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": policy})


def _apply_subscription(
    session: boto3.Session, resolver: _Resolver, props: Mapping[str, Any]
) -> None:
    sns = session.client("sns")
    topic, endpoint = resolver.resolve(props["TopicArn"]), resolver.resolve(props["Endpoint"])
    existing = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    if any(s["Endpoint"] == endpoint for s in existing):
        return
    attributes = {}
    if props.get("RawMessageDelivery"):
        attributes["RawMessageDelivery"] = "true"
    if props.get("FilterPolicy"):
        attributes["FilterPolicy"] = json.dumps(resolver.resolve(props["FilterPolicy"]))
    sns.subscribe(
        TopicArn=topic,
        Protocol=props["Protocol"],
        Endpoint=endpoint,
        Attributes=attributes,
        ReturnSubscriptionArn=True,
    )


def _apply_point_in_time_recovery(
    session: boto3.Session, resolver: _Resolver, logical: str, props: Mapping[str, Any]
) -> None:
    if not props.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled"):
        return
    dynamodb = session.client("dynamodb")
    table = resolver.physical[logical]
    backups = dynamodb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    if backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED":
        return
    dynamodb.update_continuous_backups(
        TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )


def _apply_ttl(
    session: boto3.Session, resolver: _Resolver, logical: str, props: Mapping[str, Any]
) -> None:
    spec = props.get("TimeToLiveSpecification")
    if not spec or not spec.get("Enabled"):
        return
    dynamodb = session.client("dynamodb")
    table = resolver.physical[logical]
    status = dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    if status.get("TimeToLiveStatus") in {"ENABLED", "ENABLING"}:
        return
    dynamodb.update_time_to_live(
        TableName=table,
        TimeToLiveSpecification={"AttributeName": spec["AttributeName"], "Enabled": True},
    )


_ALARM_NUMBERS = {"Period", "EvaluationPeriods", "DatapointsToAlarm"}


def _apply_alarm(session: boto3.Session, resolver: _Resolver, props: Mapping[str, Any]) -> None:
    cloudwatch = session.client("cloudwatch")
    alarm = resolver.resolve(dict(props))
    if cloudwatch.describe_alarms(AlarmNames=[alarm["AlarmName"]])["MetricAlarms"]:
        return
    for key in _ALARM_NUMBERS & alarm.keys():
        alarm[key] = int(alarm[key])
    alarm["Threshold"] = float(alarm["Threshold"])
    cloudwatch.put_metric_alarm(**alarm)


def _numbers(value: Any) -> Any:
    """Parameters arrive as strings; the API wants numbers where CloudFormation converts."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str) and value.replace(".", "", 1).isdigit():
        return float(value) if "." in value else int(value)
    return value


def _apply_scalable_target(
    session: boto3.Session, resolver: _Resolver, props: Mapping[str, Any]
) -> None:
    scaling = session.client("application-autoscaling")
    target = _numbers(resolver.resolve(dict(props)))
    target["ResourceId"] = str(resolver.resolve(props["ResourceId"]))
    found = scaling.describe_scalable_targets(
        ServiceNamespace=target["ServiceNamespace"], ResourceIds=[target["ResourceId"]]
    )["ScalableTargets"]
    if not found:
        scaling.register_scalable_target(**target)


def _apply_scaling_policy(
    session: boto3.Session, resolver: _Resolver, props: Mapping[str, Any]
) -> None:
    scaling = session.client("application-autoscaling")
    target_props = resolver.template["Resources"][props["ScalingTargetId"]["Ref"]]["Properties"]
    address = {
        "ServiceNamespace": target_props["ServiceNamespace"],
        "ResourceId": str(resolver.resolve(target_props["ResourceId"])),
        "ScalableDimension": target_props["ScalableDimension"],
    }
    name = resolver.resolve(props["PolicyName"])
    found = scaling.describe_scaling_policies(
        ServiceNamespace=address["ServiceNamespace"], ResourceId=address["ResourceId"]
    )["ScalingPolicies"]
    if any(policy["PolicyName"] == name for policy in found):
        return
    configuration = resolver.resolve(props["TargetTrackingScalingPolicyConfiguration"])
    for key in ("TargetValue", "ScaleInCooldown", "ScaleOutCooldown"):
        if key in configuration:
            configuration[key] = _numbers(configuration[key])
    configuration["TargetValue"] = float(configuration["TargetValue"])
    scaling.put_scaling_policy(
        PolicyName=name,
        PolicyType=props["PolicyType"],
        TargetTrackingScalingPolicyConfiguration=configuration,
        **address,
    )


def _apply_schedule(session: boto3.Session, resolver: _Resolver, props: Mapping[str, Any]) -> None:
    scheduler = session.client("scheduler")
    schedule = resolver.resolve(dict(props))
    names = [s["Name"] for s in scheduler.list_schedules()["Schedules"]]
    if schedule["Name"] not in names:
        scheduler.create_schedule(**schedule)


#: Resource kinds moto's CloudFormation skips, applied from their properties alone.
_APPLIED_FROM_PROPERTIES: dict[
    str, Callable[[boto3.Session, _Resolver, Mapping[str, Any]], None]
] = {
    "AWS::SQS::QueuePolicy": _apply_queue_policy,
    "AWS::SNS::Subscription": _apply_subscription,
    "AWS::CloudWatch::Alarm": _apply_alarm,
    "AWS::ApplicationAutoScaling::ScalableTarget": _apply_scalable_target,
    "AWS::ApplicationAutoScaling::ScalingPolicy": _apply_scaling_policy,
    "AWS::Scheduler::Schedule": _apply_schedule,
}


def deploy_stack(
    session: boto3.Session,
    stack_name: str,
    parameters: Mapping[str, str],
    template_path: Path = TEMPLATE,
) -> DeployedStack:
    """Create the stack in moto, then apply what moto's CloudFormation skipped."""
    template = load_template(template_path)
    cfn = session.client("cloudformation")
    cfn.create_stack(
        StackName=stack_name,
        TemplateBody=template_path.read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )
    cfn.get_waiter("stack_create_complete").wait(
        StackName=stack_name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )
    resources = cfn.list_stack_resources(StackName=stack_name)["StackResourceSummaries"]
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources}
    defaults = {
        k: str(v["Default"]) for k, v in template.get("Parameters", {}).items() if "Default" in v
    }
    account = session.client("sts").get_caller_identity()["Account"]
    resolver = _Resolver(
        template,
        {**defaults, **parameters},
        {
            "AWS::StackName": stack_name,
            "AWS::Region": session.region_name or "us-east-1",
            "AWS::AccountId": account,
            "AWS::Partition": "aws",
        },
        physical,
    )
    for logical, resource in template["Resources"].items():
        kind, props = resource["Type"], resource.get("Properties", {})
        if kind == "AWS::S3::Bucket":
            _apply_bucket_versioning(session, resolver, logical, props)
            _apply_public_access_block(session, resolver, logical, props)
            _apply_bucket_notifications(session, resolver, logical, props)
        elif kind == "AWS::DynamoDB::Table":
            _apply_ttl(session, resolver, logical, props)
            _apply_point_in_time_recovery(session, resolver, logical, props)
        elif kind in _APPLIED_FROM_PROPERTIES:
            _APPLIED_FROM_PROPERTIES[kind](session, resolver, props)
    stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    return DeployedStack(stack_name, outputs, physical)
