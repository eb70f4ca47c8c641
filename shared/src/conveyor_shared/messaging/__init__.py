"""SQS consumer loop, SNS publisher, message models and envelopes."""

from conveyor_shared.messaging.consumer import QueueConsumer, ReceivedMessage, RetryLater
from conveyor_shared.messaging.envelopes import MalformedMessage, parse_body
from conveyor_shared.messaging.publisher import CommandSender, EventPublisher

__all__ = [
    "CommandSender",
    "EventPublisher",
    "MalformedMessage",
    "QueueConsumer",
    "ReceivedMessage",
    "RetryLater",
    "parse_body",
]
