"""The demo: drop sample files into every pick-up and show each file's
progress as it moves (arrived -> queued -> delivered, or why not), read from
the ledger itself (provider files: ``providers.ReceivedWatcher``)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor_cli.localstack.providers import ReceivedWatcher

SAMPLES: dict[str, list[tuple[str, int]]] = {
    "H1001": [("members_2026-11.csv", 3_000_000), ("claims_2026-11.csv", 24_000_000)],
    "H1002": [("eligibility_2026-11-21.txt", 400_000), ("roster_2026-11-21.csv", 1_500_000)],
    "H1003": [("lab_results_2026-11.csv", 6_000_000), ("pharmacy_2026-11.csv", 800_000)],
    "H1004": [("claims_2026-11-28.csv", 2_000_000)],
}


def sample_content(name: str, size: int) -> bytes:
    """Deterministic CSV-like rows, different for every file name."""
    seed = hashlib.sha256(name.encode()).hexdigest()
    header = b"member_id,plan,service_date,amount,checksum\n"
    rows, i = [header], 0
    total = len(header)
    while total < size:
        row = f"M{i:08d},{seed[i % 40 : i % 40 + 6]},2026-11-{1 + i % 28:02d},{(i * 37) % 9999}.{i % 100:02d},{seed[:8]}\n".encode()  # noqa: E501
        rows.append(row)
        total += len(row)
        i += 1
    return b"".join(rows)[:size]


@dataclass
class FileState:
    client_id: str
    name: str
    state: str
    detail: str = ""

    @property
    def settled(self) -> bool:
        return self.state in {"delivered", "failed", "duplicate"}


def describe(entry: dict[str, Any]) -> tuple[str, str]:
    """(state, detail) of a ledger item as the demo shows it."""
    status = entry["status"]["S"]
    if status == "success":
        attempts = entry.get("sendAttempts", {}).get("N", "?")
        return "delivered", f"{entry.get('deliveredTo', {}).get('S', '')} ({attempts} attempt(s))"
    if status == "fail":
        return "failed", entry.get("lastError", {}).get("S", "unknown error")
    job = entry["jobId"]["S"]
    if "bytesDone" in entry and "size" in entry:
        done, size = int(entry["bytesDone"]["N"]), max(int(entry["size"]["N"]), 1)
        return "sending", f"{100 * done // size}% of job {job}"
    if "leaseOwner" in entry:
        return "sending", f"job {job}"
    return "queued", f"job {job}"


class ProgressWatcher:
    def __init__(
        self, session: Any, stack: str, pickup_bucket: str, say: Callable[[str], None] = print
    ) -> None:
        self._s3 = session.client("s3")
        self._dynamodb = session.client("dynamodb")
        self._table = f"{stack}-files"
        self._bucket = pickup_bucket
        self._say = say
        self.files: dict[tuple[str, str], FileState] = {}

    def _show(self, key: tuple[str, str], state: str, detail: str) -> None:
        current = self.files.get(key)
        if current and (current.state, current.detail) == (state, detail):
            return
        self.files[key] = FileState(key[0], key[1], state, detail)
        self._say(f"  {datetime.now():%H:%M:%S}  {key[0]}  {key[1]:<30} {state:<10} {detail}")

    def drop_samples(self) -> None:
        for client_id, samples in SAMPLES.items():
            for name, size in samples:
                key = f"{client_id}/{name}"
                self._s3.put_object(Bucket=self._bucket, Key=key, Body=sample_content(name, size))
                self._show(
                    (client_id, name), "arrived", f"s3://{self._bucket}/{key} ({size / 1e6:.1f} MB)"
                )

    def poll(self) -> None:
        """Show every change since the last poll, for every file in the ledger."""
        paginator = self._dynamodb.get_paginator("scan")
        for page in paginator.paginate(TableName=self._table, ConsistentRead=True):
            for entry in page.get("Items", []):
                key = (entry["clientId"]["S"], entry["fileName"]["S"])
                self._show(key, *describe(entry))

    def wait_settled(
        self,
        timeout: float,
        between_polls: Callable[[], None],
        received: ReceivedWatcher | None = None,
    ) -> bool:
        """Poll until every file shown has settled (and every provider file
        ``received`` shows was handed off); False on timeout. ``between_polls``
        runs after each poll (the stack's supervision) and may raise to stop."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if received is not None:
                received.poll()
            delivered = bool(self.files) and all(f.settled for f in self.files.values())
            if delivered and (received is None or received.settled):
                return True
            between_polls()
            time.sleep(0.5)
        return False
