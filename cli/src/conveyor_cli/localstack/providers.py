"""Provider sources of the local stack (S5): two health plans publish files
on servers of their own, and provider sync collects them.

* H3001 publishes on the FTP stand-in (``outbound/H3001``), for the care team;
* H3002 publishes on the SFTP stand-in (``outbound/H3002``), for an automated
  process (``file.received`` on the events topic).

Both read folders beside (never inside) the ones the demo routes deliver to.
``conveyor dev up`` seeds them with sample files and, since moto fires no
schedules, sends one forced poll request per source every few seconds in
place of EventBridge Scheduler. ``ReceivedWatcher`` shows each file as the
received ledger records it: listed, fetched, stored, handed off.
"""

from __future__ import annotations

import contextlib
import ftplib
import io
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor_cli.localstack.demo import sample_content

if TYPE_CHECKING:
    from conveyor_cli.localstack.stack import Endpoints

#: What each partner puts on its server: (path below its folder, size).
PROVIDER_SAMPLES: dict[str, list[tuple[str, int]]] = {
    "h3001-ftp": [("remittance_2026-11.csv", 300_000), ("care_gaps_2026-12-01.txt", 40_000)],
    "h3002-sftp": [("lab_feed_2026-12-01.csv", 1_200_000)],
}


@dataclass(frozen=True)
class ProviderDemo:
    """The two demo sources: where they read, where copies land, their secrets."""

    stack: str = "conveyor"
    landing_bucket: str = "conveyor-provider-landing"
    ftp_directory: str = "outbound/H3001"
    sftp_directory: str = "outbound/H3002"

    @property
    def landing(self) -> str:
        return f"s3://{self.landing_bucket}/partners/"

    def secret(self, source_id: str) -> str:
        """``<stack>/sync-<source>``: only provider sync's task role reads these."""
        return f"{self.stack}/sync-{source_id}"

    def sources(self, endpoints: Endpoints) -> list[dict[str, Any]]:
        common = {
            "landing": self.landing,
            "schedule_minutes": 1,
            # Two looks 2 s apart with the same size and time: the file is finished.
            "stability": {"settle_seconds": 2},
        }
        return [
            {
                "id": "h3001-ftp",
                "name": "Elm Health Plan care reports (FTP)",
                "partner_id": "H3001",
                "protocol": "ftp",
                "host": endpoints.ftp_host,
                "port": endpoints.ftp_port,
                "username": endpoints.ftp_user,
                "credentials": {"secret": self.secret("h3001-ftp")},
                "directory": self.ftp_directory,
                "include": ["*.csv", "*.txt"],
                "audience": "care_team",
                **common,
            },
            {
                "id": "h3002-sftp",
                "name": "Fir Health Plan lab feed (SFTP)",
                "partner_id": "H3002",
                "protocol": "sftp",
                "host": endpoints.sftp_host,
                "port": endpoints.sftp_port,
                "username": endpoints.sftp_user,
                "host_keys": [endpoints.sftp_host_key],
                "credentials": {"secret": self.secret("h3002-sftp")},
                "directory": self.sftp_directory,
                "audience": "process",
                **common,
            },
        ]

    def provision(self, session: Any, endpoints: Endpoints) -> None:
        """The landing bucket and each source's secret (by reference in the routes file)."""
        session.client("s3").create_bucket(Bucket=self.landing_bucket)
        secrets = session.client("secretsmanager")
        secrets.create_secret(
            Name=self.secret("h3001-ftp"),
            SecretString=json.dumps({"password": endpoints.ftp_password}),
        )
        secrets.create_secret(
            Name=self.secret("h3002-sftp"),
            SecretString=json.dumps(
                {"private_key": Path(endpoints.sftp_client_key_path).read_text()}
            ),
        )

    def publish(self, endpoints: Endpoints, source_id: str, name: str, body: bytes) -> str:
        """Put a file on a partner's server as the partner would; where it is."""
        if source_id == "h3001-ftp":
            _ftp_put(endpoints, f"{self.ftp_directory}/{name}", body)
            return f"ftp://{endpoints.ftp_host}:{endpoints.ftp_port}/{self.ftp_directory}/{name}"
        target = Path(endpoints.sftp_root) / self.sftp_directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")  # skipped by provider sync
        partial.write_bytes(body)
        partial.replace(target)
        return f"sftp://{endpoints.sftp_host}:{endpoints.sftp_port}/{self.sftp_directory}/{name}"


def _ftp_put(endpoints: Endpoints, path: str, body: bytes) -> None:
    with ftplib.FTP() as ftp:  # noqa: S321 - the local stand-in speaks plain FTP
        ftp.connect(endpoints.ftp_host, endpoints.ftp_port, timeout=10)
        ftp.login(endpoints.ftp_user, endpoints.ftp_password)
        folder = ""
        for part in path.split("/")[:-1]:
            folder = f"{folder}/{part}" if folder else part
            with contextlib.suppress(ftplib.error_perm):  # there already
                ftp.mkd(folder)
        ftp.storbinary(f"STOR {path}", io.BytesIO(body))


class SyncSchedule:
    """One forced ``sync.poll`` per source every ``every`` seconds, on the
    poll queue: what EventBridge Scheduler sends in production."""

    def __init__(self, sqs: Any, queue_url: str, source_ids: Iterable[str], every: float) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._source_ids = list(source_ids)
        self._every = every
        self._next = 0.0

    def tick(self, now: float | None = None) -> bool:
        """Send the polls if they are due; whether they were sent."""
        now = time.monotonic() if now is None else now
        if now < self._next:
            return False
        self._next = now + self._every
        self._sqs.send_message_batch(
            QueueUrl=self._queue_url,
            Entries=[
                {
                    "Id": str(index),
                    "MessageBody": json.dumps(
                        {
                            "kind": "sync.poll",
                            "v": 1,
                            "source_id": source_id,
                            "force": True,
                            "reason": "local schedule",
                        }
                    ),
                }
                for index, source_id in enumerate(self._source_ids)
            ],
        )
        return True


#: Each step a provider file goes through, in order; a later one wins.
_STEPS = ("on server", "listed", "fetching", "stored", "handed off")


class ReceivedWatcher:
    """The seeded provider files, shown as the received ledger moves them on."""

    def __init__(
        self, session: Any, stack: str, audiences: dict[str, str], say: Callable[[str], None]
    ) -> None:
        self._dynamodb = session.client("dynamodb")
        self._table = f"{stack}-received"
        self._audiences = audiences
        self._say = say
        self.files: dict[tuple[str, str], tuple[str, str]] = {}

    def show(self, key: tuple[str, str], step: str, detail: str) -> None:
        current = self.files.get(key)
        if current and _STEPS.index(current[0]) >= _STEPS.index(step):
            return
        self.files[key] = (step, detail)
        self._say(f"  {datetime.now():%H:%M:%S}  {key[0]}  {key[1]:<30} {step:<10} {detail}")

    def poll(self) -> None:
        paginator = self._dynamodb.get_paginator("scan")
        for page in paginator.paginate(TableName=self._table, ConsistentRead=True):
            for item in page.get("Items", []):
                self._note(item)

    def _note(self, item: dict[str, Any]) -> None:
        source, key = item["source"]["S"], item["key"]["S"]
        kind, _, rest = key.partition("#")
        if kind == "path":
            look = item.get("look", {}).get("M", {})
            size = look.get("size", {}).get("N", "?")
            if "fetchRequestedAt" in item:
                self.show((source, rest), "fetching", f"{size} bytes, settled: copying")
            else:
                since = item["lookedAt"]["S"]
                self.show((source, rest), "listed", f"{size} bytes, settling since {since}")
        elif kind == "version":
            path = rest.rsplit("#", 1)[0]
            uri, digest = item["uri"]["S"], item["sha256"]["S"][:16]
            self.show((source, path), "stored", f"{uri} (sha256 {digest}...)")
            if "handedOffAt" in item:
                audience = self._audiences.get(source, "?")
                self.show((source, path), "handed off", f"to the {audience} ({uri})")

    @property
    def handed_off(self) -> int:
        return sum(step == "handed off" for step, _ in self.files.values())

    @property
    def settled(self) -> bool:
        return self.handed_off == len(self.files)


def publish_samples(demo: ProviderDemo, endpoints: Endpoints, watcher: ReceivedWatcher) -> None:
    """Each partner puts its sample files on its own server."""
    for source_id, samples in PROVIDER_SAMPLES.items():
        for name, size in samples:
            where = demo.publish(endpoints, source_id, name, sample_content(name, size))
            watcher.show((source_id, name), "on server", f"{where} ({size / 1e6:.1f} MB)")
