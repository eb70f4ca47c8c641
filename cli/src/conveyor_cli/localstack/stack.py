"""The embedded local stack: start every stand-in, deploy the template into
moto, provision the demo clients and provider sources, run every Conveyor
service as a process, restarting a service that crashes, and poll the
provider sources on a schedule.

``provision`` only needs endpoints, so docker-compose's init container runs
the same code against containers (``conveyor dev provision``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import yaml

from conveyor_cli.localstack import servers
from conveyor_cli.localstack.api_keys import (
    api_keys_secret,
    create_local_keys,
    web_session_secret,
)
from conveyor_cli.localstack.deploy import deploy_stack
from conveyor_cli.localstack.processes import ManagedProcess, Supervisor, free_port
from conveyor_cli.localstack.providers import ProviderDemo, SyncSchedule
from conveyor_shared.errors import PermanentError

SERVICES = (
    "conveyor_scanner",
    "conveyor_transfer_gcs",
    "conveyor_transfer_sftp",
    "conveyor_transfer_s3",
    "conveyor_transfer_ftp",
    "conveyor_notifier",
    "conveyor_api",
    "conveyor_provider_sync",
)
MAIL_FROM = "conveyor@localhost.localdomain"


@dataclass
class Endpoints:
    """Where each stand-in listens, and how to get in."""

    aws_url: str
    gcs_url: str
    sftp_host: str
    sftp_port: int
    sftp_user: str
    sftp_host_key: str
    sftp_client_key_path: str
    sftp_root: str
    smtp_host: str
    smtp_port: int
    ftp_host: str
    ftp_port: int
    ftp_user: str
    ftp_password: str
    maildir: str | None = None
    #: The status and resend API (and its web page at ``/web/``).
    api_port: int = 8080

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


@dataclass
class DemoClients:
    """The four demo routes, one per destination type."""

    stack: str = "conveyor"
    pickup_bucket: str = "conveyor-pickup"
    gcs_bucket: str = "h1001-inbound"
    s3_bucket: str = "h1003-deliveries"
    sftp_directory: str = "inbound/H1002"
    sftp_secret: str = "conveyor/h1002/sftp"  # noqa: S105 - a secret's name, not a value
    #: On the FTP stand-in, beside (not inside) what provider sources read.
    ftp_directory: str = "deliveries/H1004"
    ftp_secret: str = "conveyor/h1004/ftp"  # noqa: S105 - a secret's name, not a value
    contacts: dict[str, list[str]] = field(
        default_factory=lambda: {
            "H1001": ["analytics@acme-health.example"],
            "H1002": ["ops@bluebird-care.example"],
            "H1003": ["lake@cedar-analytics.example"],
            "H1004": ["files@dogwood-health.example"],
        }
    )
    #: The partners' servers provider sync collects from.
    providers: ProviderDemo = field(default_factory=ProviderDemo)

    def routes(self, endpoints: Endpoints) -> dict[str, Any]:
        pickup = f"s3://{self.pickup_bucket}"
        return {
            "version": 1,
            "mail_from": MAIL_FROM,
            "ops": {"emails": ["data-ops@conveyor.example"]},
            "routes": [
                {
                    "name": "Acme Health monthly extracts (GCS)",
                    "client_id": "H1001",
                    "contacts": self.contacts["H1001"],
                    "pickup": f"{pickup}/H1001/",
                    "destination": {
                        "type": "gcs",
                        "bucket": self.gcs_bucket,
                        "prefix": "monthly/",
                        "chunk_mib": 8,
                    },
                },
                {
                    "name": "Bluebird Care weekly (SFTP)",
                    "client_id": "H1002",
                    "contacts": self.contacts["H1002"],
                    "pickup": f"{pickup}/H1002/",
                    "destination": {
                        "type": "sftp",
                        "host": endpoints.sftp_host,
                        "port": endpoints.sftp_port,
                        "username": endpoints.sftp_user,
                        "directory": self.sftp_directory,
                        "host_keys": [endpoints.sftp_host_key],
                        "credentials": {"secret": self.sftp_secret},
                        "create_directory": True,
                    },
                },
                {
                    "name": "Cedar Analytics data lake (S3)",
                    "client_id": "H1003",
                    "contacts": self.contacts["H1003"],
                    "pickup": f"{pickup}/H1003/",
                    "destination": {"type": "s3", "bucket": self.s3_bucket, "prefix": "incoming/"},
                },
                {
                    "name": "Dogwood Health claims (FTP)",
                    "client_id": "H1004",
                    "contacts": self.contacts["H1004"],
                    "pickup": f"{pickup}/H1004/",
                    "destination": {
                        "type": "ftp",
                        "host": endpoints.ftp_host,
                        "port": endpoints.ftp_port,
                        "tls": "none",  # the stand-in speaks plain FTP
                        "username": endpoints.ftp_user,
                        "directory": self.ftp_directory,
                        "credentials": {"secret": self.ftp_secret},
                        "create_dirs": True,
                    },
                },
            ],
            "sources": self.providers.sources(endpoints),
        }


def aws_env(endpoints: Endpoints) -> dict[str, str]:
    return {**servers.LOCAL_AWS_ENV, "AWS_ENDPOINT_URL": endpoints.aws_url}


def provision(
    endpoints: Endpoints, demo: DemoClients, routes_path: Path, say: Callable[[str], None] = print
) -> Path:
    """Deploy the template and create what the demo routes need. Idempotent
    only on a fresh moto: the local stack always starts from nothing."""
    saved = {k: os.environ.get(k) for k in (*aws_env(endpoints), "AWS_CA_BUNDLE")}
    os.environ.update(aws_env(endpoints))
    os.environ.pop("AWS_CA_BUNDLE", None)
    try:
        session = boto3.Session()
        deployed = deploy_stack(session, demo.stack, {"PickupBucketName": demo.pickup_bucket})
        say(
            f"  deployed deploy/conveyor.yaml as stack '{deployed.name}' "
            f"({len(deployed.physical)} resources)"
        )
        session.client("s3").create_bucket(Bucket=demo.s3_bucket)
        session.client("secretsmanager").create_secret(
            Name=demo.sftp_secret,
            SecretString=json.dumps(
                {"private_key": Path(endpoints.sftp_client_key_path).read_text()}
            ),
        )
        session.client("secretsmanager").create_secret(
            Name=demo.ftp_secret, SecretString=json.dumps({"password": endpoints.ftp_password})
        )
        demo.providers.provision(session, endpoints)
        session.client("ses").verify_email_identity(EmailAddress=MAIL_FROM)
        create_local_keys(
            session.client("secretsmanager"), demo.stack, routes_path.parent / "api-keys.json"
        )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    httpx.post(
        f"{endpoints.gcs_url}/storage/v1/b",
        params={"project": "local"},
        json={"name": demo.gcs_bucket},
        timeout=10,
    ).raise_for_status()
    routes_path.write_text(
        "# Generated by `conveyor dev up` for the embedded local stack.\n"
        + yaml.safe_dump(demo.routes(endpoints), sort_keys=False)
    )
    say(f"  routes: {routes_path} (H1001 -> GCS, H1002 -> SFTP, H1003 -> S3, H1004 -> FTP)")
    say("  sources: h3001-ftp (FTP -> care team), h3002-sftp (SFTP -> process)")
    return routes_path


def service_env(
    endpoints: Endpoints, demo: DemoClients, routes_path: Path, log_level: str = "INFO"
) -> dict[str, str]:
    return {
        **aws_env(endpoints),
        "STORAGE_EMULATOR_HOST": endpoints.gcs_url,
        "CONVEYOR_ENVIRONMENT": "local",
        "CONVEYOR_STACK": demo.stack,
        "CONVEYOR_ROUTES_URI": str(routes_path),
        "CONVEYOR_LOG_JSON": "true",
        "CONVEYOR_LOG_LEVEL": log_level,
        "CONVEYOR_RECEIVE_WAIT_SECONDS": "2",
        "CONVEYOR_BATCH_WINDOW_SECONDS": "1",
        "CONVEYOR_NOTIFIER_TRANSPORT": "smtp",
        "CONVEYOR_SMTP_HOST": endpoints.smtp_host,
        "CONVEYOR_SMTP_PORT": str(endpoints.smtp_port),
        "CONVEYOR_SMTP_STARTTLS": "false",
        "CONVEYOR_API_PORT": str(endpoints.api_port),
        "CONVEYOR_API_KEYS_SECRET": api_keys_secret(demo.stack),
        "CONVEYOR_WEB_SESSION_SECRET": web_session_secret(demo.stack),
    }


class StandInExited(PermanentError):
    """A stand-in (moto, the GCS emulator, sshd, FTP, SMTP) died: what it held
    is gone, so the local stack stops rather than restart it empty."""


class LocalStack:
    """Every stand-in and every service as child processes of this one."""

    def __init__(self, state: Path, demo: DemoClients | None = None) -> None:
        self.state = state
        self.demo = demo or DemoClients()
        self.servers: list[ManagedProcess] = []
        self.services: list[Supervisor] = []
        self.routes_path: Path | None = None
        self.endpoints: Endpoints | None = None
        self.smtp: servers.SmtpServer | None = None
        self.sync_schedule: SyncSchedule | None = None

    def start_servers(self, say: Callable[[str], None] = print) -> Endpoints:
        self.state.mkdir(parents=True, exist_ok=True)
        moto = servers.start_moto(self.state)
        self.servers.append(moto.process)
        say(f"  moto (S3, SQS, SNS, DynamoDB, Secrets Manager, SES)  {moto.url}")
        gcs = servers.start_gcs(self.state)
        self.servers.append(gcs.process)
        say(f"  GCS emulator                                         {gcs.host}")
        sshd = servers.start_sshd(self.state)
        self.servers.append(sshd.process)
        say(f"  OpenSSH sshd (SFTP)                                  127.0.0.1:{sshd.port}")
        ftp = servers.start_ftp(self.state)
        self.servers.append(ftp.process)
        say(f"  FTP (pyftpdlib)                                      127.0.0.1:{ftp.port}")
        self.smtp = servers.start_smtp(self.state)
        self.servers.append(self.smtp.process)
        say(f"  SMTP (aiosmtpd, Maildir)                             127.0.0.1:{self.smtp.port}")
        self.endpoints = Endpoints(
            aws_url=moto.url,
            gcs_url=gcs.host,
            sftp_host="127.0.0.1",
            sftp_port=sshd.port,
            sftp_user=sshd.username,
            sftp_host_key=sshd.host_key,
            sftp_client_key_path=str(sshd.client_key_path),
            sftp_root=str(sshd.root),
            smtp_host="127.0.0.1",
            smtp_port=self.smtp.port,
            ftp_host="127.0.0.1",
            ftp_port=ftp.port,
            ftp_user=ftp.username,
            ftp_password=ftp.password,
            maildir=str(self.smtp.maildir),
            api_port=free_port(),
        )
        return self.endpoints

    def start_services(self, routes_path: Path, say: Callable[[str], None] = print) -> None:
        assert self.endpoints is not None
        self.routes_path = routes_path
        env = {**os.environ, **service_env(self.endpoints, self.demo, routes_path)}
        env.pop("AWS_CA_BUNDLE", None)
        for module in SERVICES:
            proc = ManagedProcess(
                module,
                [sys.executable, "-m", module],
                self.state / "logs" / f"{module.removeprefix('conveyor_')}.log",
                env=env,
            ).start()
            label = module.removeprefix("conveyor_").replace("_", "-")
            self.services.append(Supervisor(proc, label))
            say(f"  {label:<16} pid {proc.pid}")

    def supervise(self, say: Callable[[str], None] = print) -> None:
        """Poll every child: restart a service that exited, after its back-off
        (as compose's ``restart: unless-stopped``); raise ``StandInExited`` if a
        stand-in did."""
        for server in self.servers:
            if not server.running():
                raise StandInExited(
                    f"stand-in {server.name} exited ({server.how_it_exited()}); the local "
                    f"stack cannot run without it, so everything stops. See {server.log_path}"
                )
        restarted = [s for s in self.services if s.check(say)]
        if self.sync_schedule is not None:
            self.sync_schedule.tick()
        if restarted:
            self.write_env_file()  # `conveyor dev env` and the drill find the new pid

    def start_sync_schedule(self, every: float) -> SyncSchedule:
        """Poll every provider source each ``every`` seconds from ``supervise``
        (moto fires no schedules); the first polls go out on its next call."""
        assert self.endpoints is not None
        sqs = boto3.client(
            "sqs",
            endpoint_url=self.endpoints.aws_url,
            region_name=servers.LOCAL_AWS_ENV["AWS_REGION"],
            aws_access_key_id=servers.LOCAL_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=servers.LOCAL_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        )
        queue = sqs.get_queue_url(QueueName=f"{self.demo.stack}-sync-poll")["QueueUrl"]
        sources = [s["id"] for s in self.demo.providers.sources(self.endpoints)]
        self.sync_schedule = SyncSchedule(sqs, queue, sources, every)
        return self.sync_schedule

    def write_env_file(self) -> Path:
        """What ``conveyor dev env`` reads; replaced whole, so never read half-written."""
        assert self.endpoints is not None
        assert self.routes_path is not None
        known_hosts = f"[127.0.0.1]:{self.endpoints.sftp_port} {self.endpoints.sftp_host_key}\n"
        (self.state / "known_hosts").write_text(known_hosts)
        path, partial = self.state / "env.json", self.state / "env.json.partial"
        partial.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "processes": {
                        p.name: p.pid for p in [*self.servers, *(s.process for s in self.services)]
                    },
                    "endpoints": asdict(self.endpoints),
                    "exports": shell_exports(self.endpoints, self.demo, self.routes_path),
                },
                indent=2,
            )
        )
        partial.replace(path)
        return path

    def stop(self) -> None:
        """Services first (they drain in-flight work), then the servers; each
        group is told at once and given one grace period together, so a stop
        takes seconds however many services there are."""
        _stop_together([service.process for service in reversed(self.services)], grace=15)
        _stop_together(list(reversed(self.servers)), grace=5)


def _stop_together(processes: list[ManagedProcess], grace: float) -> None:
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.stop(grace=max(0.5, deadline - time.monotonic()))


def shell_exports(endpoints: Endpoints, demo: DemoClients, routes_path: Path) -> dict[str, str]:
    return {
        **aws_env(endpoints),
        "STORAGE_EMULATOR_HOST": endpoints.gcs_url,
        "CONVEYOR_STACK": demo.stack,
        "CONVEYOR_ROUTES_URI": str(routes_path),
        "CONVEYOR_PICKUP_BUCKET": demo.pickup_bucket,
        "CONVEYOR_LANDING_BUCKET": demo.providers.landing_bucket,
        "CONVEYOR_SFTP_HOST": endpoints.sftp_host,
        "CONVEYOR_SFTP_PORT": str(endpoints.sftp_port),
        "CONVEYOR_SFTP_USER": endpoints.sftp_user,
        "CONVEYOR_SFTP_KEY": endpoints.sftp_client_key_path,
        "CONVEYOR_SFTP_ROOT": endpoints.sftp_root,
        "CONVEYOR_FTP_HOST": endpoints.ftp_host,
        "CONVEYOR_FTP_PORT": str(endpoints.ftp_port),
        "CONVEYOR_FTP_USER": endpoints.ftp_user,
        "CONVEYOR_FTP_PASSWORD": endpoints.ftp_password,
        "CONVEYOR_SMTP_HOST": endpoints.smtp_host,
        "CONVEYOR_SMTP_PORT": str(endpoints.smtp_port),
        "CONVEYOR_API_URL": endpoints.api_url,
        **({"CONVEYOR_MAILDIR": endpoints.maildir} if endpoints.maildir else {}),
    }
