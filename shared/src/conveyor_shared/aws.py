"""The AWS clients Conveyor uses, made in one place.

Endpoints come from the standard ``AWS_ENDPOINT_URL*`` variables that boto3
reads itself, so moto locally and AWS in production need no code change.
"""

from __future__ import annotations

import aioboto3
from aiobotocore.config import AioConfig

from conveyor_shared.aws_calls import recorder_from_environment

#: Connection pool large enough for a worker's concurrency plus its heartbeats.
CLIENT_CONFIG = AioConfig(
    retries={"mode": "standard", "max_attempts": 5},
    max_pool_connections=64,
    connect_timeout=10,
    read_timeout=60,
)


def aws_session(region: str) -> aioboto3.Session:
    session = aioboto3.Session(region_name=region)
    recorder = recorder_from_environment()
    if recorder is not None:
        recorder.register(session.events)
    return session
