"""Metrics in CloudWatch embedded metric format (EMF), for the alarms in
``deploy/conveyor.yaml`` (B4).

Each metric is one JSON line on the service's log stream (stderr, which the
container's ``awslogs`` driver ships to CloudWatch Logs); CloudWatch turns the
``_aws`` block into metric data, so no ``PutMetricData`` call, permission or
client is needed, and a metric costs nothing when nothing happens.

Every metric carries the dimension set ``[Stack]`` (what the alarms watch: one
alarm per deployment, whichever service emitted it) and ``[Stack, Service]``
(to see which one). ``conveyor_shared.runtime.open_clients`` binds the stack
and service (``bind_service``) for everything the service's tasks do; a
context variable of its own, because the consumer resets the log context
for each message.
The names here are the contract with the template; ``tests/deploy`` checks
that each alarm's namespace, metric and dimensions are these.
"""

from __future__ import annotations

import json
import sys
import time
from contextvars import ContextVar
from typing import Any, TextIO

NAMESPACE = "Conveyor"

#: A file settled ``fail`` for good (D7): by a worker on a permanent error, by
#: a dead-letter consumer after its third attempt, or by the health check.
FILES_FAILED = "FilesFailed"
#: How many configured sources have had no good poll in their last N
#: intervals, emitted by provider-sync after every poll round (so a silent
#: provider-sync is seen too: the alarm treats missing data as breaching).
SOURCES_OVERDUE = "SourcesOverdue"

DIMENSION_SETS = [["Stack"], ["Stack", "Service"]]

_SERVICE: ContextVar[tuple[str, str] | None] = ContextVar("conveyor_metrics", default=None)


def bind_service(stack: str, service: str) -> None:
    """Name the deployment and service of every metric emitted from this context on."""
    _SERVICE.set((stack, service))


def emit(
    name: str, value: float, unit: str = "Count", out: TextIO | None = None, **properties: Any
) -> None:
    """Write one EMF line for ``name``; ``properties`` are extra searchable fields
    (not dimensions). Does nothing outside a service's context (nothing bound)."""
    bound = _SERVICE.get()
    if bound is None:
        return
    stack, service = bound
    document = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": DIMENSION_SETS,
                    "Metrics": [{"Name": name, "Unit": unit}],
                }
            ],
        },
        "Stack": stack,
        "Service": service,
        name: value,
        "event": f"metric.{name}",
        **properties,
    }
    stream = out or sys.stderr
    stream.write(json.dumps(document) + "\n")
    stream.flush()


def file_failed(kind: str) -> None:
    """One file settled ``fail``; ``kind`` is its error kind (permanent, exhausted, ...)."""
    emit(FILES_FAILED, 1, error_kind=kind)


def sources_overdue(count: int) -> None:
    """How many sources have had no good poll in their last N intervals."""
    emit(SOURCES_OVERDUE, count)
