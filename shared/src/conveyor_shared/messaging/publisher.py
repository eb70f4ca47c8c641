"""Sending commands to SQS queues and publishing events on the SNS topic."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from conveyor_shared.errors import TransientError


class CommandSender:
    """Puts commands on one SQS queue."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self._sqs = sqs
        self.queue_url = queue_url

    async def send(self, command: BaseModel, delay_seconds: int = 0) -> str:
        response = await self._sqs.send_message(
            QueueUrl=self.queue_url,
            MessageBody=command.model_dump_json(),
            DelaySeconds=delay_seconds,
        )
        return str(response["MessageId"])

    async def send_many(self, commands: Sequence[BaseModel]) -> None:
        """Send in batches of ten; raises ``TransientError`` naming what was not sent."""
        for start in range(0, len(commands), 10):
            chunk = commands[start : start + 10]
            response = await self._sqs.send_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "MessageBody": c.model_dump_json()} for i, c in enumerate(chunk)
                ],
            )
            if response.get("Failed"):
                ids = [f["Id"] for f in response["Failed"]]
                raise TransientError(f"SQS refused {len(ids)} of {len(chunk)} messages: {ids}")


class EventPublisher:
    """Publishes events on the SNS topic, with ``kind`` and ``client_id`` as attributes
    so subscribers can filter without parsing bodies."""

    def __init__(self, sns: Any, topic_arn: str) -> None:
        self._sns = sns
        self.topic_arn = topic_arn

    async def publish(self, event: BaseModel) -> str:
        attributes = {
            name: {"DataType": "String", "StringValue": str(value)}
            for name in ("kind", "client_id")
            if (value := getattr(event, name, None))
        }
        response = await self._sns.publish(
            TopicArn=self.topic_arn, Message=event.model_dump_json(), MessageAttributes=attributes
        )
        return str(response["MessageId"])
