"""Just enough IAM policy evaluation to check the task roles of
``deploy/services.yaml`` against the AWS calls the services really make.

A recorded call (``conveyor_shared.aws_calls``) becomes the IAM actions and
resource ARNs AWS would authorise it by (``HeadObject`` is ``s3:GetObject``;
a ``TransactWriteItems`` is one ``PutItem``/``UpdateItem``/... per table;
an object read by version is ``s3:GetObjectVersion``). A policy allows a
request when some ``Allow`` statement matches its action and resource with
IAM's wildcards (``*`` any run of characters, ``?`` one); the templates have
no ``Deny`` statements or conditions (checked).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor_cli.localstack.deploy import _Resolver, load_template

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
REGION, ACCOUNT = "us-east-1", "123456789012"
#: Stand-in for a test's stack name (``t`` + 8 hex digits) in recorded calls.
STACK = "STACK"
PARAMETERS = {
    "DataStackName": STACK,
    "PickupBucketName": f"{STACK}-pickup",
    "RoutesBucketName": f"{STACK}-config",
    "RoutesKey": "routes.yaml",
    "S3DestinationBuckets": "dest-*",
    "ArchiveBuckets": "archive-*",
    "LandingBuckets": f"{STACK}-landing",
    # The integration tests' sender: mail_from ...@delivery.example.
    "MailIdentity": "delivery.example",
}


@dataclass(frozen=True)
class Request:
    action: str
    resource: str


def task_policies(
    template_path: Path = DEPLOY / "services.yaml",
) -> dict[str, list[dict[str, Any]]]:
    """Each service's resolved task-role statements, by service name."""
    template = load_template(template_path)
    resolver = _Resolver(
        template,
        PARAMETERS,
        {
            "AWS::StackName": f"{STACK}-services",
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
        },
        {},
    )
    policies: dict[str, list[dict[str, Any]]] = {}
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::IAM::Role" or "ecs-tasks" not in str(
            resource["Properties"]["AssumeRolePolicyDocument"]
        ):
            continue
        for policy in resource["Properties"].get("Policies", []):
            policies[policy["PolicyName"]] = resolver.resolve(policy["PolicyDocument"])["Statement"]
    return policies


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def allows(statements: list[dict[str, Any]], request: Request) -> bool:
    for statement in statements:
        if statement["Effect"] != "Allow":
            continue
        actions = (a.lower() for a in _listed(statement["Action"]))
        if not any(fnmatch.fnmatchcase(request.action.lower(), a) for a in actions):
            continue
        if any(fnmatch.fnmatchcase(request.resource, r) for r in _listed(statement["Resource"])):
            return True
    return False


def _s3_object(bucket: str, key: str) -> str:
    return f"arn:aws:s3:::{bucket}/{key}"


def _queue(params: Mapping[str, Any]) -> str:
    name = params.get("QueueName") or str(params["QueueUrl"]).rsplit("/", 1)[-1]
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"


def _table(name: str, index: str | None = None) -> str:
    arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
    return f"{arn}/index/{index}" if index else arn


_TRANSACT = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}
_S3_WRITES = {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}
_S3_BUCKET = {
    "ListObjectsV2": "ListBucket",
    "ListObjects": "ListBucket",
    "HeadBucket": "ListBucket",
    "ListObjectVersions": "ListBucketVersions",
    "ListMultipartUploads": "ListBucketMultipartUploads",
}
_SQS_BATCH = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}


def _s3(operation: str, params: Mapping[str, Any]) -> Iterator[Request]:
    bucket, key = params.get("Bucket", ""), params.get("Key", "")
    versioned = "Version" if params.get("VersionId") else ""
    if operation in _S3_BUCKET:
        yield Request(f"s3:{_S3_BUCKET[operation]}", f"arn:aws:s3:::{bucket}")
    elif operation in ("GetObject", "HeadObject"):
        yield Request(f"s3:GetObject{versioned}", _s3_object(bucket, key))
    elif operation == "DeleteObject":
        yield Request(f"s3:DeleteObject{versioned}", _s3_object(bucket, key))
    elif operation in _S3_WRITES:
        yield Request("s3:PutObject", _s3_object(bucket, key))
    elif operation in ("CopyObject", "UploadPartCopy"):
        yield Request("s3:PutObject", _s3_object(bucket, key))
        source = params["CopySource"]
        if isinstance(source, str):
            path, _, query = source.partition("?versionId=")
            source = {"Bucket": path.split("/", 1)[0], "Key": path.split("/", 1)[1]}
            source["VersionId"] = query
        suffix = "Version" if source.get("VersionId") else ""
        yield Request(f"s3:GetObject{suffix}", _s3_object(source["Bucket"], source["Key"]))
    elif operation == "DeleteObjects":
        # IAM has no action of its own for it: each key is authorised as a DeleteObject
        # (DeleteObjectVersion with a version). The keys are not recorded, so the policy
        # must allow both on any object of the bucket.
        for action in ("s3:DeleteObject", "s3:DeleteObjectVersion"):
            yield Request(action, _s3_object(bucket, "*"))
    elif operation == "ListParts":
        yield Request("s3:ListMultipartUploadParts", _s3_object(bucket, key))
    else:
        yield Request(
            f"s3:{operation}", _s3_object(bucket, key) if key else f"arn:aws:s3:::{bucket}"
        )


def _dynamodb(operation: str, params: Mapping[str, Any]) -> Iterator[Request]:
    if operation in ("TransactWriteItems", "TransactGetItems"):
        for item in params["TransactItems"]:
            for kind, body in item.items():
                yield Request(f"dynamodb:{_TRANSACT[kind]}", _table(body["TableName"]))
    elif "RequestItems" in params:
        for table in params["RequestItems"]:
            yield Request(f"dynamodb:{operation}", _table(table))
    else:
        yield Request(f"dynamodb:{operation}", _table(params["TableName"], params.get("IndexName")))


def _secret(params: Mapping[str, Any]) -> str:
    secret = str(params["SecretId"])
    if secret.startswith("arn:"):
        return secret
    # Secrets Manager appends six random characters to a secret's name in its ARN.
    return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{secret}-AbCdEf"


def _ses(operation: str, params: Mapping[str, Any]) -> Iterator[Request]:
    sender = str(params.get("FromEmailAddress", "")).rsplit("<", 1)[-1].rstrip(">")
    identity = f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/"
    # SES authorises a send by the address's own identity or its domain's.
    yield Request(f"ses:{operation}", identity + sender.rsplit("@", 1)[-1])
    if params.get("ConfigurationSetName"):
        yield Request(
            f"ses:{operation}",
            f"arn:aws:ses:{REGION}:{ACCOUNT}:configuration-set/{params['ConfigurationSetName']}",
        )


def requests_of(call: Mapping[str, Any]) -> list[Request]:
    """The IAM requests one recorded call makes (none for calls IAM does not authorise)."""
    api, operation, params = call["api"], call["operation"], call["params"]
    if api == "sts" and operation == "GetCallerIdentity":
        return []  # allowed to every principal; no policy can deny it
    if api == "s3":
        return list(_s3(operation, params))
    if api == "dynamodb":
        return list(_dynamodb(operation, params))
    if api == "sqs":
        return [Request(f"sqs:{_SQS_BATCH.get(operation, operation)}", _queue(params))]
    if api == "sns":
        return [Request(f"sns:{operation}", str(params["TopicArn"]))]
    if api == "secretsmanager":
        return [Request(f"secretsmanager:{operation}", _secret(params))]
    if api == "ses":
        return list(_ses(operation, params))
    return [Request(f"{api}:{operation}", "*")]


_STACK = re.compile(r"(?<![0-9a-zA-Z])t[0-9a-f]{8}(?![0-9a-zA-Z])")
_UNIQUE = re.compile(r"(?<![0-9a-zA-Z])[0-9a-f]{8}(?![0-9a-zA-Z])")


def normalise(text: str) -> str:
    """A test's stack name and unique suffixes (``unique`` fixture: 8 hex digits)
    as stand-ins, so calls from many tests fold into one list."""
    return _UNIQUE.sub("UNIQUE", _STACK.sub(STACK, text))
