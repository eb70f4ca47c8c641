"""The recording behind tests/deploy/aws_calls.json: with CONVEYOR_AWS_CALL_LOG
set, a service's session writes each call it signs with its own credentials
to <dir>/<service>.jsonl (against moto, over HTTP)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import structlog

from conveyor_cli.localstack import servers
from conveyor_shared.aws import aws_session
from conveyor_shared.aws_calls import ENV_VAR


async def test_a_services_calls_are_recorded_and_explicit_credentials_are_not(
    moto: servers.Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unique: str
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    structlog.contextvars.bind_contextvars(service="scanner")
    try:
        session = aws_session("us-east-1")
    finally:
        structlog.contextvars.unbind_contextvars("service")
    queue = f"calls-{unique}"
    async with session.client("sqs") as sqs:
        url = (await sqs.create_queue(QueueName=queue))["QueueUrl"]
        await sqs.send_message(QueueUrl=url, MessageBody="not recorded: a body")
    async with session.client(
        "s3", aws_access_key_id="AKIDOTHER", aws_secret_access_key="other-secret"
    ) as s3:
        await s3.list_buckets()
    lines = [json.loads(line) for line in (tmp_path / "scanner.jsonl").read_text().splitlines()]
    assert lines == [
        {
            "api": "sqs",
            "operation": "CreateQueue",
            "params": {"QueueName": queue},
            "service": "scanner",
        },
        {
            "api": "sqs",
            "operation": "SendMessage",
            "params": {"QueueUrl": url},
            "service": "scanner",
        },
    ]


async def test_no_recording_outside_a_service(
    moto: servers.Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    async with aws_session("us-east-1").client("sqs") as sqs:
        await sqs.list_queues()
    assert os.listdir(tmp_path) == []
