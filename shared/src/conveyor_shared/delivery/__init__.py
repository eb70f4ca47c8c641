"""The delivery half of Conveyor: what every transfer service does with a
``transfer.requested`` message, whatever its destination type."""

from conveyor_shared.delivery.destinations import DestinationFactory, destination_path
from conveyor_shared.delivery.failures import DeadLetterHandler, fail_file
from conveyor_shared.delivery.jobs import JobCompletion
from conveyor_shared.delivery.worker import DeliveryWorker

__all__ = [
    "DeadLetterHandler",
    "DeliveryWorker",
    "DestinationFactory",
    "JobCompletion",
    "destination_path",
    "fail_file",
]
