"""A record of every AWS call a service makes, for the least-privilege check.

With ``CONVEYOR_AWS_CALL_LOG=<dir>`` set, each session made by
``conveyor_shared.aws.aws_session`` appends one JSON line per call to
``<dir>/<service>.jsonl``: the service (bound in the log context by its
``run()`` when the session is made: the consumer resets that context for each
message), the API, the operation and the parameters that name what it
touches (bucket and key, queue, table and index, topic, secret).
``tests/deploy`` folds these into the calls each service's IAM policy must
allow. Calls signed with credentials given explicitly (a route's own S3
credentials read from a secret) are not the task role's and are left out, as
are calls made outside any service's context (a test's own setup).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import structlog

ENV_VAR = "CONVEYOR_AWS_CALL_LOG"

#: The parameters that say which resource a call touches; nothing else (no
#: bodies, no message contents, no attribute values) is recorded.
_ADDRESSING = (
    "Bucket",
    "Key",
    "Prefix",
    "VersionId",
    "CopySource",
    "QueueUrl",
    "QueueName",
    "TableName",
    "IndexName",
    "TopicArn",
    "SecretId",
    "FromEmailAddress",
    "ConfigurationSetName",
)


def _addressing(params: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {k: params[k] for k in _ADDRESSING if k in params}
    if isinstance(found.get("CopySource"), dict):
        found["CopySource"] = {
            k: v for k, v in found["CopySource"].items() if k != "SSECustomerKey"
        }
    items = params.get("TransactItems")
    if items:
        found["TransactItems"] = [
            {kind: {"TableName": body["TableName"]} for kind, body in item.items()}
            for item in items
        ]
    if "RequestItems" in params:
        found["RequestItems"] = sorted(params["RequestItems"])
    return found


class CallRecorder:
    """Botocore event handlers that append each call to the service's file."""

    def __init__(self, directory: Path, service: str) -> None:
        self._directory = directory
        self._service = service

    def register(self, events: Any) -> None:
        events.register("before-parameter-build", self.remember_params)
        events.register("before-call", self.record)

    def remember_params(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["conveyor_call"] = _addressing(params)

    def record(
        self, model: Any, context: dict[str, Any], request_signer: Any = None, **_: Any
    ) -> None:
        credentials = getattr(request_signer, "_credentials", None)
        if getattr(credentials, "method", None) == "explicit":
            return
        line = {
            "service": self._service,
            "api": model.service_model.signing_name,
            "operation": model.name,
            "params": context.get("conveyor_call", {}),
        }
        self._directory.mkdir(parents=True, exist_ok=True)
        # One short line per write with O_APPEND: replicas and processes share a file safely.
        with (self._directory / f"{self._service}.jsonl").open("a") as out:
            out.write(json.dumps(line, sort_keys=True) + "\n")


def recorder_from_environment() -> CallRecorder | None:
    """A recorder for a session made now, in a service's context; else None."""
    directory = os.environ.get(ENV_VAR)
    service = structlog.contextvars.get_contextvars().get("service")
    return CallRecorder(Path(directory), service) if directory and service else None
