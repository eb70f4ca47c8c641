"""Render ``deploy/services.yaml``: the compute that runs Conveyor on ECS Fargate.

Why a second template: ``conveyor.yaml`` holds what must outlive the compute
(the ledger tables, the pick-up bucket, the queues and their messages, D11)
and is deployed once and rarely changed; ``services.yaml`` holds what is
replaced freely (task definitions, roles, scaling, the load balancer) and can
be torn down and redeployed without touching a file's record. It takes the
data stack's name and builds every ARN from the names that stack gives its
resources (``<stack>-<suffix>``, as ``conveyor_shared.settings.ResourceNames``
does), so both deploy with ``aws cloudformation deploy`` and neither needs
the other's exports.

CloudFormation has no loops, so each service's block (log group, task role
and policy, task definition, service, scalable target and two scaling
policies) is written here once, from the ``SERVICES`` table, and rendered out;
``tests/deploy`` fails when the checked-in file differs from the rendering.
Run ``uv run python deploy/render_services.py`` after editing this file.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from conveyor_shared.config.models import DESTINATION_TYPES

OUT = Path(__file__).with_name("services.yaml")

#: Fargate's longest stop timeout; it must exceed TransferSettings.drain_seconds (90 s),
#: so a stopping transfer finishes or hands its file back before it is killed.
STOP_TIMEOUT = 120
API_PORT = 8080
#: A queue service's liveness file (conveyor_shared.health): on a task volume, as the root
#: filesystem is read-only; touched every 10 s, so 60 s without a touch is a stuck loop.
HEALTH_DIR = "/run/conveyor"
HEALTH_FILE = f"{HEALTH_DIR}/alive"
HEALTH_MAX_AGE = 60
#: The provider-sync schedule's message: no source_id, so every source is asked.
SYNC_POLL_TICK = '{"kind": "sync.poll", "v": 1, "reason": "schedule"}'
#: The API's unauthenticated liveness route (services/api: routes/system.py).
HEALTH_PATH = "/healthz"

QUEUE_CONSUMER = [
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueUrl",
    "sqs:GetQueueAttributes",
]
QUEUE_SENDER = ["sqs:SendMessage", "sqs:GetQueueUrl"]
LEDGER_READ = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem"]
LEDGER_WRITE = [
    *LEDGER_READ,
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:ConditionCheckItem",
]
PICKUP_READ = ["s3:GetObject", "s3:GetObjectVersion"]
PICKUP_MOVE = [*PICKUP_READ, "s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"]
PICKUP_LIST = ["s3:ListBucket", "s3:ListBucketVersions"]


def sub(text: str) -> dict[str, str]:
    return {"Fn::Sub": text}


def ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def queue_arn(suffix: str) -> dict[str, str]:
    return sub(
        f"arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:${{DataStackName}}-{suffix}"
    )


def table_arns(*names: str) -> list[dict[str, str]]:
    base = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${DataStackName}"
    # A Query on an index needs the index's ARN; the indexes of a table are its own.
    arns = []
    for name in names:
        arns += [sub(f"{base}-{name}"), sub(f"{base}-{name}/index/*")]
    return arns


def secret_arns(*prefixes: str) -> list[dict[str, str]]:
    """Secrets are named ``<stack>/<kind>...`` (docs/configuration.md): a service
    reads only the kinds it delivers to or sends through."""
    base = "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:"
    return [sub(f"{base}${{DataStackName}}/{prefix}*") for prefix in prefixes]


PICKUP_OBJECTS = sub("arn:${AWS::Partition}:s3:::${PickupBucketName}/*")
PICKUP_BUCKET = sub("arn:${AWS::Partition}:s3:::${PickupBucketName}")
ROUTES_OBJECT = sub("arn:${AWS::Partition}:s3:::${RoutesBucketName}/${RoutesKey}")
EVENTS_TOPIC = sub(
    "arn:${AWS::Partition}:sns:${AWS::Region}:${AWS::AccountId}:${DataStackName}-events"
)


def allow(sid: str, actions: list[str], resources: list[Any]) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}


def transfer_policy(kind: str) -> list[dict[str, Any]]:
    """Every transfer service: its own queue and dead-letter queue, the scanner's
    queue for held duplicates, the ledger, the pick-up, its own secrets."""
    queue = f"transfer-{kind}"
    return [
        allow("OwnQueues", QUEUE_CONSUMER, [queue_arn(queue), queue_arn(f"{queue}-dlq")]),
        allow("Requeue", ["sqs:SendMessage"], [queue_arn(queue)]),
        allow("HeldDuplicates", QUEUE_SENDER, [queue_arn("scanner")]),
        allow("Ledger", LEDGER_WRITE, table_arns("files", "jobs", "locks")),
        allow("Pickup", PICKUP_MOVE, [PICKUP_OBJECTS]),
        allow("Events", ["sns:Publish"], [EVENTS_TOPIC]),
        allow("Routes", ["s3:GetObject"], [ROUTES_OBJECT]),
        allow("Secrets", ["secretsmanager:GetSecretValue"], secret_arns(kind)),
        # after_delivery: archive copies the delivered file there, then checks the copy.
        allow(
            "Archive",
            ["s3:PutObject", "s3:GetObject"],
            [sub("arn:${AWS::Partition}:s3:::${ArchiveBuckets}/*")],
        ),
    ]


@dataclass(frozen=True)
class Service:
    name: str
    module: str
    statements: list[dict[str, Any]]
    #: The work queue it scales on (None: scaled on CPU, the API).
    queue: str | None
    cpu: int = 512
    memory: int = 1024
    max_tasks: int = 10
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("-"))


SERVICES = [
    Service(
        "scanner",
        "conveyor_scanner",
        [
            allow("OwnQueues", QUEUE_CONSUMER, [queue_arn("scanner"), queue_arn("scanner-dlq")]),
            # Work it hands itself: a batch to record later, a scan's follow-up.
            allow("Requeue", ["sqs:SendMessage"], [queue_arn("scanner")]),
            allow(
                "Dispatch",
                QUEUE_SENDER,
                [queue_arn(f"transfer-{kind}") for kind in DESTINATION_TYPES],
            ),
            allow("Ledger", LEDGER_WRITE, table_arns("files", "jobs", "locks")),
            allow("PickupList", PICKUP_LIST, [PICKUP_BUCKET]),
            allow("Pickup", PICKUP_MOVE, [PICKUP_OBJECTS]),
            allow("Events", ["sns:Publish"], [EVENTS_TOPIC]),
            allow("Routes", ["s3:GetObject"], [ROUTES_OBJECT]),
        ],
        queue="scanner",
        max_tasks=4,
    ),
    Service("transfer-gcs", "conveyor_transfer_gcs", transfer_policy("gcs"), "transfer-gcs"),
    Service("transfer-sftp", "conveyor_transfer_sftp", transfer_policy("sftp"), "transfer-sftp"),
    Service("transfer-ftp", "conveyor_transfer_ftp", transfer_policy("ftp"), "transfer-ftp"),
    Service(
        "transfer-s3",
        "conveyor_transfer_s3",
        [
            *transfer_policy("s3"),
            # Routes without credentials of their own deliver with the task role.
            allow(
                "Destinations",
                ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"],
                [sub("arn:${AWS::Partition}:s3:::${S3DestinationBuckets}/*")],
            ),
        ],
        "transfer-s3",
    ),
    Service(
        "notifier",
        "conveyor_notifier",
        [
            allow("OwnQueues", QUEUE_CONSUMER, [queue_arn("notifier"), queue_arn("notifier-dlq")]),
            allow(
                "WatchDeadLetters",
                ["sqs:GetQueueUrl", "sqs:GetQueueAttributes"],
                [queue_arn("scanner-dlq")],
            ),
            allow("Records", LEDGER_WRITE, table_arns("notifications")),
            allow("Ledger", LEDGER_READ, table_arns("files", "jobs")),
            allow("Routes", ["s3:GetObject"], [ROUTES_OBJECT]),
            allow("Secrets", ["secretsmanager:GetSecretValue"], secret_arns("smtp", "slack")),
            allow(
                "Mail",
                ["ses:SendEmail"],
                [
                    sub(
                        "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/${MailIdentity}"
                    ),
                    sub(
                        "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:"
                        "configuration-set/${DataStackName}"
                    ),
                ],
            ),
        ],
        queue="notifier",
        cpu=256,
        memory=512,
        max_tasks=2,
        environment={"CONVEYOR_NOTIFIER_TRANSPORT": "ses"},
    ),
    Service(
        "provider-sync",
        "conveyor_provider_sync",
        [
            allow(
                "OwnQueues",
                QUEUE_CONSUMER,
                [
                    queue_arn(q)
                    for q in ("sync-poll", "sync-poll-dlq", "sync-fetch", "sync-fetch-dlq")
                ],
            ),
            # A poll asks for one fetch per new or changed file (and for itself again).
            allow(
                "Fetches", ["sqs:SendMessage"], [queue_arn("sync-poll"), queue_arn("sync-fetch")]
            ),
            allow("Ledger", LEDGER_WRITE, table_arns("received", "locks")),
            # Each file lands under a temporary key first, then is copied into place.
            allow(
                "Landing",
                ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                [sub("arn:${AWS::Partition}:s3:::${LandingBuckets}/*")],
            ),
            allow("Events", ["sns:Publish"], [EVENTS_TOPIC]),
            allow("Routes", ["s3:GetObject"], [ROUTES_OBJECT]),
            allow("Secrets", ["secretsmanager:GetSecretValue"], secret_arns("sync-")),
        ],
        queue="sync-fetch",
    ),
    Service(
        "api",
        "conveyor_api",
        [
            # Action records and Idempotency-Keys live in the locks table.
            allow("Ledger", LEDGER_WRITE, table_arns("files", "jobs", "locks")),
            allow("Readiness", ["dynamodb:DescribeTable"], table_arns("files")),
            # Downloads and resends read the upload as it was picked up (its version).
            allow("Pickup", PICKUP_READ, [PICKUP_OBJECTS]),
            allow(
                "Resend",
                QUEUE_SENDER,
                [
                    queue_arn("scanner"),
                    *(queue_arn(f"transfer-{k}") for k in DESTINATION_TYPES),
                ],
            ),
            allow(
                # A redrive takes each dead letter off and sends it (or its file) back to
                # work; listing dead letters looks at them without taking them.
                "Redrive",
                [
                    "sqs:GetQueueAttributes",
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:StartMessageMoveTask",
                    "sqs:ListMessageMoveTasks",
                ],
                [
                    queue_arn(f"{q}-dlq")
                    for q in (
                        "scanner",
                        *(f"transfer-{k}" for k in DESTINATION_TYPES),
                        "notifier",
                    )
                ],
            ),
            allow("Events", ["sns:Publish"], [EVENTS_TOPIC]),
            allow("Routes", ["s3:GetObject"], [ROUTES_OBJECT]),
            allow("Secrets", ["secretsmanager:GetSecretValue"], secret_arns("api")),
            # Provider sources: files received, health, poll now, check/test/plan
            # (which reach partners' servers with the sources' secrets), downloads.
            allow("Received", LEDGER_READ, table_arns("received")),
            allow("PollNow", QUEUE_SENDER, [queue_arn("sync-poll")]),
            # Status: every queue's and dead-letter queue's depth.
            allow(
                "QueueDepths",
                ["sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
                [
                    queue_arn(f"{q}{dlq}")
                    for q in (
                        "scanner",
                        *(f"transfer-{k}" for k in DESTINATION_TYPES),
                        "notifier",
                        "sync-poll",
                        "sync-fetch",
                    )
                    for dlq in ("", "-dlq")
                ],
            ),
            allow("SourceSecrets", ["secretsmanager:GetSecretValue"], secret_arns("sync-")),
            allow(
                "Landing", ["s3:GetObject"], [sub("arn:${AWS::Partition}:s3:::${LandingBuckets}/*")]
            ),
        ],
        queue=None,
        max_tasks=4,
        environment={
            "CONVEYOR_API_HOST": "0.0.0.0",  # noqa: S104 - inside the task's own network namespace
            "CONVEYOR_API_PORT": str(API_PORT),
            "CONVEYOR_API_KEYS_SECRET": sub("${DataStackName}/api-keys"),
        },
    ),
]


def parameters() -> dict[str, Any]:
    params: dict[str, Any] = {
        "DataStackName": {
            "Type": "String",
            "Description": "Name of the deploy/conveyor.yaml stack (queues, tables, topics).",
            "AllowedPattern": "^[a-zA-Z][a-zA-Z0-9-]{0,40}$",
        },
        "PickupBucketName": {"Type": "String", "Description": "The data stack's pick-up bucket."},
        "RoutesBucketName": {"Type": "String", "Description": "Bucket holding the routes file."},
        "RoutesKey": {"Type": "String", "Default": "routes.yaml", "Description": "Its key."},
        # No defaults: a placeholder bucket name could be anyone's bucket.
        "S3DestinationBuckets": {
            "Type": "String",
            "Description": (
                "Bucket-name pattern (IAM wildcards) that S3 routes without credentials of "
                "their own deliver to with the task role (the pick-up bucket if none)."
            ),
        },
        "ArchiveBuckets": {
            "Type": "String",
            "Description": (
                "Bucket-name pattern of the routes' archive locations (after_delivery: "
                "archive; the pick-up bucket if none)."
            ),
        },
        "LandingBuckets": {
            "Type": "String",
            "Description": (
                "Bucket-name pattern of the provider sources' landing locations in S3 "
                "(the pick-up bucket if none)."
            ),
        },
        "MailIdentity": {
            "Type": "String",
            "Description": "SES identity (domain or address) the notifier sends from.",
        },
        "ImageRegistry": {
            "Type": "String",
            "Description": (
                "Registry holding conveyor-<service> images "
                "(ECR: <account>.dkr.ecr.<region>.amazonaws.com)."
            ),
        },
        "ImageTag": {"Type": "String", "Description": "Image tag to run, e.g. a git commit."},
        "VpcId": {"Type": "AWS::EC2::VPC::Id"},
        "ServiceSubnetIds": {
            "Type": "List<AWS::EC2::Subnet::Id>",
            "Description": "Private subnets (with a NAT or VPC endpoints) for the tasks.",
        },
        "LoadBalancerSubnetIds": {
            "Type": "List<AWS::EC2::Subnet::Id>",
            "Description": "Subnets of the API's load balancer (public if internet-facing).",
        },
        "LoadBalancerScheme": {
            "Type": "String",
            "Default": "internal",
            "AllowedValues": ["internal", "internet-facing"],
        },
        "ApiAllowedCidr": {
            "Type": "String",
            "Default": "10.0.0.0/8",
            "Description": "Who may reach the API's HTTPS listener.",
        },
        "CertificateArn": {"Type": "String", "Description": "ACM certificate for the API's HTTPS."},
        "ScanSchedule": {
            "Type": "String",
            "Default": "rate(15 minutes)",
            "Description": "How often the scheduled scan catches what events missed (D2).",
        },
        "SyncPollSchedule": {
            "Type": "String",
            "Default": "rate(1 minute)",
            "Description": (
                "How often provider-sync looks for due sources: the finest schedule_minutes "
                "a source can have."
            ),
        },
        "LogRetentionDays": {
            "Type": "Number",
            "Default": 30,
            "AllowedValues": [7, 14, 30, 60, 90, 180, 365],
        },
        "BacklogPerTask": {
            "Type": "Number",
            "Default": 20,
            "MinValue": 1,
            "Description": "Visible messages per running task that the queue services scale to.",
        },
        "OldestMessageSeconds": {
            "Type": "Number",
            "Default": 300,
            "MinValue": 30,
            "Description": "A work queue's oldest message older than this adds tasks.",
        },
        "AlarmTopicArn": {
            "Type": "String",
            "Description": "The data stack's AlarmTopicArn output.",
        },
    }
    for service in SERVICES:
        params[f"{service.key}MinTasks"] = {"Type": "Number", "Default": 1, "MinValue": 1}
        params[f"{service.key}MaxTasks"] = {
            "Type": "Number",
            "Default": service.max_tasks,
            "MinValue": 1,
        }
        params[f"{service.key}Cpu"] = {
            "Type": "Number",
            "Default": service.cpu,
            "AllowedValues": [256, 512, 1024, 2048, 4096],
        }
        params[f"{service.key}Memory"] = {
            "Type": "Number",
            "Default": service.memory,
            "Description": "MiB; must suit the CPU (Fargate's task sizes).",
        }
    return params


def shared_resources() -> dict[str, Any]:
    return {
        "Cluster": {
            "Type": "AWS::ECS::Cluster",
            "Properties": {
                "ClusterName": sub("${DataStackName}"),
                # Container Insights gives RunningTaskCount, the backlog-per-task divisor.
                "ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}],
            },
        },
        "ExecutionRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": trust("ecs-tasks.amazonaws.com"),
                "ManagedPolicyArns": [
                    sub(
                        "arn:${AWS::Partition}:iam::aws:policy/service-role/"
                        "AmazonECSTaskExecutionRolePolicy"
                    )
                ],
            },
        },
        "TaskSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": (
                    "Conveyor tasks: outbound only, plus the API port from its load balancer"
                ),
                "VpcId": ref("VpcId"),
                "SecurityGroupEgress": [
                    {
                        "IpProtocol": "-1",
                        "CidrIp": "0.0.0.0/0",
                        "Description": "AWS APIs and destinations",
                    }
                ],
            },
        },
        "ApiFromLoadBalancer": {
            "Type": "AWS::EC2::SecurityGroupIngress",
            "Properties": {
                "GroupId": {"Fn::GetAtt": ["TaskSecurityGroup", "GroupId"]},
                "IpProtocol": "tcp",
                "FromPort": API_PORT,
                "ToPort": API_PORT,
                "SourceSecurityGroupId": {"Fn::GetAtt": ["LoadBalancerSecurityGroup", "GroupId"]},
            },
        },
        "LoadBalancerSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": "The API load balancer: HTTPS in",
                "VpcId": ref("VpcId"),
                "SecurityGroupIngress": [
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 443,
                        "ToPort": 443,
                        "CidrIp": ref("ApiAllowedCidr"),
                    }
                ],
            },
        },
        "LoadBalancer": {
            "Type": "AWS::ElasticLoadBalancingV2::LoadBalancer",
            "Properties": {
                "Name": sub("${DataStackName}-api"),
                "Scheme": ref("LoadBalancerScheme"),
                "Subnets": ref("LoadBalancerSubnetIds"),
                "SecurityGroups": [{"Fn::GetAtt": ["LoadBalancerSecurityGroup", "GroupId"]}],
            },
        },
        "ApiTargetGroup": {
            "Type": "AWS::ElasticLoadBalancingV2::TargetGroup",
            "Properties": {
                "Name": sub("${DataStackName}-api"),
                "VpcId": ref("VpcId"),
                "Protocol": "HTTP",
                "Port": API_PORT,
                "TargetType": "ip",
                "HealthCheckPath": HEALTH_PATH,
                "HealthCheckIntervalSeconds": 15,
                "HealthyThresholdCount": 2,
                "TargetGroupAttributes": [
                    {"Key": "deregistration_delay.timeout_seconds", "Value": "30"}
                ],
            },
        },
        "HttpsListener": {
            "Type": "AWS::ElasticLoadBalancingV2::Listener",
            "Properties": {
                "LoadBalancerArn": ref("LoadBalancer"),
                "Protocol": "HTTPS",
                "Port": 443,
                "SslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
                "Certificates": [{"CertificateArn": ref("CertificateArn")}],
                "DefaultActions": [{"Type": "forward", "TargetGroupArn": ref("ApiTargetGroup")}],
            },
        },
        "ApiServerErrorsAlarm": {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmName": sub("${DataStackName}-api-5xx"),
                "AlarmDescription": "The API answered 5xx; see docs/operations.md.",
                "Namespace": "AWS/ApplicationELB",
                "MetricName": "HTTPCode_Target_5XX_Count",
                "Dimensions": [
                    {
                        "Name": "LoadBalancer",
                        "Value": {"Fn::GetAtt": ["LoadBalancer", "LoadBalancerFullName"]},
                    }
                ],
                "Statistic": "Sum",
                "Period": 60,
                "EvaluationPeriods": 5,
                "DatapointsToAlarm": 2,
                "Threshold": 5,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
                "AlarmActions": [ref("AlarmTopicArn")],
            },
        },
        "SchedulerRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": trust("scheduler.amazonaws.com"),
                "Policies": [
                    {
                        "PolicyName": "schedules",
                        "PolicyDocument": {
                            "Version": "2012-10-17",
                            "Statement": [
                                allow("ScanRequests", ["sqs:SendMessage"], [queue_arn("scanner")]),
                                allow(
                                    "PollRequests", ["sqs:SendMessage"], [queue_arn("sync-poll")]
                                ),
                            ],
                        },
                    }
                ],
            },
        },
        "ScanRequests": schedule(
            "scan",
            "The scheduled scan (D2); one runs at a time however many scanners (D10).",
            "ScanSchedule",
            "scanner",
            '{"kind": "scan.requested", "v": 1, "reason": "schedule"}',
        ),
        "PollRequests": schedule(
            "sync-poll",
            "One tick for every provider source: provider-sync answers it with one poll "
            "message per source, and each polls under its own lease when its "
            "schedule_minutes say it is due (S1, docs/provider-sync.md).",
            "SyncPollSchedule",
            "sync-poll",
            SYNC_POLL_TICK,
        ),
    }


def schedule(name: str, description: str, expression: str, queue: str, body: str) -> dict[str, Any]:
    """An EventBridge Scheduler schedule that sends ``body`` to ``queue`` with the
    scheduler's role (moto keeps schedules but never fires them)."""
    return {
        "Type": "AWS::Scheduler::Schedule",
        "Properties": {
            "Name": sub(f"${{DataStackName}}-{name}"),
            "Description": description,
            "ScheduleExpression": ref(expression),
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "Target": {
                "Arn": queue_arn(queue),
                "RoleArn": {"Fn::GetAtt": ["SchedulerRole", "Arn"]},
                "Input": body,
            },
        },
    }


def trust(principal: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": principal}, "Action": "sts:AssumeRole"}
        ],
    }


def service_resources(service: Service) -> dict[str, Any]:
    """One service's block: log group, task role, task definition, service, scaling."""
    key, name = service.key, service.name
    environment = {
        "CONVEYOR_STACK": ref("DataStackName"),
        "CONVEYOR_ROUTES_URI": sub("s3://${RoutesBucketName}/${RoutesKey}"),
        "CONVEYOR_ENVIRONMENT": "production",
        "CONVEYOR_LOG_JSON": "true",
        "AWS_REGION": ref("AWS::Region"),
        **({"CONVEYOR_HEALTH_FILE": HEALTH_FILE} if service.queue else {}),
        **service.environment,
    }
    container: dict[str, Any] = {
        "Name": name,
        "Image": sub(f"${{ImageRegistry}}/conveyor-{name}:${{ImageTag}}"),
        "Essential": True,
        "StopTimeout": STOP_TIMEOUT,
        "ReadonlyRootFilesystem": True,
        "Environment": [{"Name": k, "Value": v} for k, v in environment.items()],
        "LogConfiguration": {
            "LogDriver": "awslogs",
            "Options": {
                "awslogs-group": ref(f"{key}LogGroup"),
                "awslogs-region": ref("AWS::Region"),
                "awslogs-stream-prefix": name,
            },
        },
    }
    ecs_service: dict[str, Any] = {
        "Type": "AWS::ECS::Service",
        "Properties": {
            "ServiceName": name,
            "Cluster": ref("Cluster"),
            "TaskDefinition": ref(f"{key}TaskDefinition"),
            "LaunchType": "FARGATE",
            "DesiredCount": ref(f"{key}MinTasks"),
            "PropagateTags": "SERVICE",
            "DeploymentConfiguration": {
                "MinimumHealthyPercent": 100,
                "MaximumPercent": 200,
                "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True},
            },
            "NetworkConfiguration": {
                "AwsvpcConfiguration": {
                    "AssignPublicIp": "DISABLED",
                    "Subnets": ref("ServiceSubnetIds"),
                    "SecurityGroups": [{"Fn::GetAtt": ["TaskSecurityGroup", "GroupId"]}],
                }
            },
        },
    }
    volumes: list[dict[str, str]] = []
    if service.queue is not None:
        volumes = [{"Name": "run"}]
        container["MountPoints"] = [
            {"SourceVolume": "run", "ContainerPath": HEALTH_DIR, "ReadOnly": False}
        ]
        container["HealthCheck"] = {
            "Command": [
                "CMD",
                "python",
                "-m",
                "conveyor_shared.health",
                HEALTH_FILE,
                str(HEALTH_MAX_AGE),
            ],
            "Interval": 30,
            "Timeout": 5,
            "Retries": 3,
            "StartPeriod": 60,
        }
    if service.queue is None:
        container["PortMappings"] = [{"ContainerPort": API_PORT, "Protocol": "tcp"}]
        container["HealthCheck"] = {
            "Command": [
                "CMD",
                "python",
                "-c",
                "import urllib.request; urllib.request.urlopen("
                f"'http://127.0.0.1:{API_PORT}{HEALTH_PATH}', timeout=3)",
            ],
            "Interval": 15,
            "Timeout": 5,
            "Retries": 3,
            "StartPeriod": 20,
        }
        ecs_service["DependsOn"] = "HttpsListener"
        ecs_service["Properties"]["HealthCheckGracePeriodSeconds"] = 30
        ecs_service["Properties"]["LoadBalancers"] = [
            {
                "ContainerName": name,
                "ContainerPort": API_PORT,
                "TargetGroupArn": ref("ApiTargetGroup"),
            }
        ]
    return {
        f"{key}LogGroup": {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {
                "LogGroupName": sub(f"/conveyor/${{DataStackName}}/{name}"),
                "RetentionInDays": ref("LogRetentionDays"),
            },
        },
        f"{key}TaskRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": trust("ecs-tasks.amazonaws.com"),
                "Policies": [
                    {
                        "PolicyName": name,
                        "PolicyDocument": {
                            "Version": "2012-10-17",
                            "Statement": service.statements,
                        },
                    }
                ],
            },
        },
        f"{key}TaskDefinition": {
            "Type": "AWS::ECS::TaskDefinition",
            "Properties": {
                "Family": sub(f"${{DataStackName}}-{name}"),
                "RequiresCompatibilities": ["FARGATE"],
                "NetworkMode": "awsvpc",
                "Cpu": ref(f"{key}Cpu"),
                "Memory": ref(f"{key}Memory"),
                "RuntimePlatform": {"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"},
                "ExecutionRoleArn": {"Fn::GetAtt": ["ExecutionRole", "Arn"]},
                "TaskRoleArn": {"Fn::GetAtt": [f"{key}TaskRole", "Arn"]},
                "ContainerDefinitions": [container],
                **({"Volumes": volumes} if volumes else {}),
            },
        },
        f"{key}Service": ecs_service,
        **scaling(service),
    }


def scaling(service: Service) -> dict[str, Any]:
    key = service.key
    resource_id = sub(f"service/${{Cluster}}/${{{key}Service.Name}}")
    policies: dict[str, Any] = {
        f"{key}ScalableTarget": {
            "Type": "AWS::ApplicationAutoScaling::ScalableTarget",
            "Properties": {
                "ServiceNamespace": "ecs",
                "ScalableDimension": "ecs:service:DesiredCount",
                "ResourceId": resource_id,
                "MinCapacity": ref(f"{key}MinTasks"),
                "MaxCapacity": ref(f"{key}MaxTasks"),
            },
        }
    }
    target = ref(f"{key}ScalableTarget")
    if service.queue is None:
        policies[f"{key}CpuScaling"] = target_tracking(
            target,
            sub(f"${{DataStackName}}-{service.name}-cpu"),
            {
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "ECSServiceAverageCPUUtilization"
                },
                "TargetValue": 60,
            },
        )
        return policies
    queue = [{"Name": "QueueName", "Value": sub(f"${{DataStackName}}-{service.queue}")}]
    policies[f"{key}BacklogScaling"] = target_tracking(
        target,
        sub(f"${{DataStackName}}-{service.name}-backlog"),
        {
            # Visible messages per running task (the queue's backlog shared out).
            "CustomizedMetricSpecification": {
                "Metrics": [
                    metric_query(
                        "visible", "AWS/SQS", "ApproximateNumberOfMessagesVisible", queue, "Sum"
                    ),
                    metric_query(
                        "tasks",
                        "ECS/ContainerInsights",
                        "RunningTaskCount",
                        [
                            {"Name": "ClusterName", "Value": ref("Cluster")},
                            {"Name": "ServiceName", "Value": service.name},
                        ],
                        "Average",
                    ),
                    {
                        "Id": "backlog_per_task",
                        "Expression": "IF(tasks > 0, visible / tasks, visible)",
                        "Label": "Visible messages per running task",
                        "ReturnData": True,
                    },
                ]
            },
            "TargetValue": ref("BacklogPerTask"),
            "ScaleOutCooldown": 60,
            "ScaleInCooldown": 300,
        },
    )
    policies[f"{key}AgeScaling"] = target_tracking(
        target,
        sub(f"${{DataStackName}}-{service.name}-oldest-message"),
        {
            # Scale-out only: an old message says work waits; scale-in follows the backlog.
            "CustomizedMetricSpecification": {
                "Namespace": "AWS/SQS",
                "MetricName": "ApproximateAgeOfOldestMessage",
                "Dimensions": queue,
                "Statistic": "Maximum",
            },
            "TargetValue": ref("OldestMessageSeconds"),
            "DisableScaleIn": True,
            "ScaleOutCooldown": 60,
        },
    )
    return policies


def metric_query(
    query_id: str, namespace: str, metric: str, dimensions: list[Any], stat: str
) -> dict[str, Any]:
    return {
        "Id": query_id,
        "MetricStat": {
            "Metric": {"Namespace": namespace, "MetricName": metric, "Dimensions": dimensions},
            "Stat": stat,
        },
        "ReturnData": False,
    }


def target_tracking(target: Any, name: Any, configuration: dict[str, Any]) -> dict[str, Any]:
    return {
        "Type": "AWS::ApplicationAutoScaling::ScalingPolicy",
        "Properties": {
            "PolicyName": name,
            "PolicyType": "TargetTrackingScaling",
            "ScalingTargetId": target,
            "TargetTrackingScalingPolicyConfiguration": configuration,
        },
    }


def template() -> dict[str, Any]:
    resources = shared_resources()
    for service in SERVICES:
        resources.update(service_resources(service))
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": (
            "Conveyor's compute: one Fargate service per Conveyor service, scaled on its "
            "queue, with a least-privilege task role each, the API behind HTTPS, and the "
            "scan and provider-poll schedules. Rendered by deploy/render_services.py; edit "
            "that, not this."
        ),
        "Parameters": parameters(),
        "Resources": resources,
        "Outputs": {
            "ClusterName": {"Value": ref("Cluster")},
            "ApiUrl": {"Value": sub("https://${LoadBalancer.DNSName}")},
        },
    }


def render() -> str:
    header = (
        "# Rendered by deploy/render_services.py from its SERVICES table: edit that file and\n"
        "# run `uv run python deploy/render_services.py`; tests/deploy checks this is current.\n"
    )
    return header + yaml.dump(template(), Dumper=_PlainDumper, sort_keys=False, width=100)


class _PlainDumper(yaml.SafeDumper):
    """No anchors and aliases: CloudFormation refuses them."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
