"""Conveyor as it runs in production, against the stand-ins: ``deploy/conveyor.yaml``
deployed into moto, a routes file, the scanner and a transfer service as
processes (``python -m conveyor_scanner``, ``python -m conveyor_transfer_sftp``...).

A file is delivered the real way: it lands in the pick-up, S3 notifies the
scanner's queue, the scanner records a job in the ledger and sends
``transfer.requested``, the transfer service copies it and settles it
``success``. The services' JSON logs say when each step happened.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import yaml

from bench.standins import StandIns
from conveyor_cli.localstack.deploy import deploy_stack
from conveyor_cli.localstack.processes import ManagedProcess

SFTP_SECRET = "bench/sftp"  # a secret's name, not a value


def parse_time(iso: str) -> float:
    """Seconds since the epoch from a log or ledger timestamp (ISO 8601, UTC)."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every JSON event a service has written to its log so far."""
    follower = LogFollower(path)
    return follower.read_new()


class LogFollower:
    """The JSON lines a service writes, read as they appear."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read_new(self) -> list[dict[str, Any]]:
        """Events written since the last call (a line still being written waits)."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as log:
            log.seek(self._offset)
            data = self._partial + log.read()
            self._offset = log.tell()
        *lines, self._partial = data.split(b"\n")
        events = []
        for line in lines:
            if line.startswith(b"{"):
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return events


@dataclass
class Service:
    """One service process and its log."""

    process: ManagedProcess
    log: LogFollower
    #: Every event read from the log so far.
    events: list[dict[str, Any]] = field(default_factory=list)
    _unseen: deque[dict[str, Any]] = field(default_factory=deque)

    def wait_for(
        self, wanted: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        """The next log event ``wanted`` accepts; raises if a transfer fails, the
        process exits, or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while self._unseen:
                event = self._unseen.popleft()
                if wanted(event):
                    return event
                if event.get("event") in {"transfer.failed", "transfer.attempt_failed"}:
                    raise RuntimeError(f"{what}: {event}")
            new = self.log.read_new()
            self.events += new
            self._unseen.extend(new)
            if new:
                continue
            if not self.process.running():
                tail = self.log.path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.process.name} exited; {self.log.path} ends:\n{tail}")
            time.sleep(0.05)
        raise TimeoutError(
            f"timed out after {timeout:.0f}s waiting for {what}; see {self.log.path}"
        )

    def stop(self) -> None:
        self.process.stop(grace=20)


def route(client_id: str, pickup_bucket: str, destination: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": f"Benchmark {client_id}",
        "client_id": client_id,
        "contacts": ["bench@conveyor.example"],
        "notify": False,
        "pickup": f"s3://{pickup_bucket}/{client_id}/",
        "destination": dict(destination),
    }


class Pipeline:
    """One deployment of the stack, its routes, and the services it runs."""

    def __init__(self, stand_ins: StandIns, state: Path, scanner_env: Mapping[str, str]) -> None:
        self.stand_ins = stand_ins
        self.state = state
        self.stack = f"bench{secrets.token_hex(3)}"
        self.pickup_bucket = f"{self.stack}-pickup"
        self.routes_path = state / "routes.yaml"
        self._scanner_env = dict(scanner_env)
        self._routes: list[dict[str, Any]] = []
        self._scanner: Service | None = None
        session = boto3.Session()
        deploy_stack(session, self.stack, {"PickupBucketName": self.pickup_bucket})
        self.s3 = session.client("s3")
        self.dynamodb = session.client("dynamodb")
        session.client("secretsmanager").create_secret(
            Name=SFTP_SECRET, SecretString=json.dumps({"private_key": stand_ins.sshd.private_key})
        )

    def add_route(self, client_id: str, destination: Mapping[str, Any]) -> None:
        """Routes are fixed before the scanner starts."""
        if self._scanner is not None:
            raise RuntimeError("add every route before starting the scanner")
        self._routes.append(route(client_id, self.pickup_bucket, destination))

    def sftp_destination(self, directory: str, **settings: Any) -> dict[str, Any]:
        sshd = self.stand_ins.sshd
        return {
            "type": "sftp",
            "host": "127.0.0.1",
            "port": sshd.port,
            "username": sshd.username,
            "directory": directory,
            "host_keys": [sshd.host_key],
            "credentials": {"secret": SFTP_SECRET},
            "create_directory": True,
            **settings,
        }

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "CONVEYOR_STACK": self.stack,
            "CONVEYOR_ROUTES_URI": str(self.routes_path),
            "CONVEYOR_ENVIRONMENT": "local",
            "CONVEYOR_LOG_JSON": "true",
            "CONVEYOR_RECEIVE_WAIT_SECONDS": "1",
            **extra,
        }
        if self.stand_ins.gcs is not None:
            env |= self.stand_ins.gcs.env
        env.pop("AWS_CA_BUNDLE", None)
        return env

    def start(self, module: str, log_name: str, **extra_env: str) -> Service:
        """Start ``python -m module`` and wait until it consumes its queue."""
        log = self.state / "logs" / f"{log_name}.log"
        # Every AWS request of the service names it in its User-Agent (``app/<name>``),
        # so moto's request log (bench.requests) can say who made it.
        caller = module.removeprefix("conveyor_").replace("_", "-")
        env = self.env(AWS_SDK_UA_APP_ID=caller, **extra_env)
        process = ManagedProcess(module, [sys.executable, "-m", module], log, env=env).start()
        service = Service(process, LogFollower(log))
        try:
            service.wait_for(lambda e: e.get("event") == "service.started", 60, f"{module} start")
        except BaseException:
            service.stop()
            raise
        return service

    def start_scanner(self) -> None:
        self.routes_path.write_text(
            yaml.safe_dump({"version": 1, "routes": self._routes}, sort_keys=False)
        )
        self._scanner = self.start("conveyor_scanner", "scanner", **self._scanner_env)

    def restart_scanner(self, scanner_env: Mapping[str, str], log_name: str) -> None:
        """The scanner again, with ``scanner_env`` instead of the run's batching settings
        (a variable left out takes the service's default)."""
        self.stop()
        self._scanner = self.start("conveyor_scanner", log_name, **scanner_env)

    @property
    def scanner(self) -> Service:
        assert self._scanner is not None
        return self._scanner

    @property
    def scanner_pid(self) -> int:
        return self.scanner.process.pid

    def stop(self) -> None:
        if self._scanner is not None:
            self._scanner.stop()
            self._scanner = None

    def ledger_tables(self) -> list[str]:
        return [f"{self.stack}-{name}" for name in ("files", "jobs", "locks", "notifications")]

    def scan_table(self, table: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for page in self.dynamodb.get_paginator("scan").paginate(TableName=table):
            items += page["Items"]
        return items

    def clear_ledger(self) -> None:
        """Empty the ledger tables, so a leg does not pay for the items the one before
        it left (moto's DynamoDB slows with a table's size)."""
        for table in self.ledger_tables():
            schema = self.dynamodb.describe_table(TableName=table)["Table"]["KeySchema"]
            names = [key["AttributeName"] for key in schema]
            for item in self.scan_table(table):
                self.dynamodb.delete_item(TableName=table, Key={n: item[n] for n in names})

    def ledger(self, client_id: str) -> list[dict[str, Any]]:
        """Every ledger entry of ``client_id`` (plain values, attribute names as stored)."""
        items: list[dict[str, Any]] = []
        pages = self.dynamodb.get_paginator("query").paginate(
            TableName=f"{self.stack}-files",
            KeyConditionExpression="clientId = :c",
            ExpressionAttributeValues={":c": {"S": client_id}},
            ConsistentRead=True,
        )
        for page in pages:
            for item in page["Items"]:
                items.append({name: next(iter(value.values())) for name, value in item.items()})
        return items
