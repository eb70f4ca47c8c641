"""``conveyor dev``: the embedded local stack (S5)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import boto3
import httpx
import typer

from conveyor_cli.localstack.api_keys import read_local_keys
from conveyor_cli.localstack.demo import SAMPLES, ProgressWatcher
from conveyor_cli.localstack.processes import wait_until
from conveyor_cli.localstack.providers import ReceivedWatcher, publish_samples
from conveyor_cli.localstack.servers import LOCAL_FTP_PASSWORD, prepare_sshd
from conveyor_cli.localstack.stack import (
    DemoClients,
    Endpoints,
    LocalStack,
    StandInExited,
    aws_env,
    provision,
)

app = typer.Typer(
    help="The embedded local stack: every external system, on 127.0.0.1.", no_args_is_help=True
)

STATE = Path(".conveyor/dev")
StateDir = Annotated[Path, typer.Option(help="Where the local stack keeps its data and logs")]


def _sigterm_as_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def _where_to_look(stack: LocalStack, routes: Path) -> None:
    ep, demo = stack.endpoints, stack.demo
    assert ep is not None
    typer.echo(f"""
Where to look:
  shell exports       eval "$(uv run conveyor dev env)"
  ledger (DynamoDB)   python -c "import boto3; [print(i) for i in boto3.client('dynamodb').scan(TableName='{demo.stack}-files')['Items']]"
  S3 destination      python -c "import boto3; print([o['Key'] for o in boto3.client('s3').list_objects_v2(Bucket='{demo.s3_bucket}')['Contents']])"
  GCS destination     curl -s {ep.gcs_url}/storage/v1/b/{demo.gcs_bucket}/o
  SFTP destination    sftp -i {ep.sftp_client_key_path} -P {ep.sftp_port} -o UserKnownHostsFile={stack.state / "known_hosts"} {ep.sftp_user}@127.0.0.1:{demo.sftp_directory}
                      (or: ls {ep.sftp_root}/{demo.sftp_directory})
  FTP destination     ftp://{ep.ftp_user}@{ep.ftp_host}:{ep.ftp_port}/{demo.ftp_directory} (password: $CONVEYOR_FTP_PASSWORD)
  provider servers    ftp://{ep.ftp_host}:{ep.ftp_port}/{demo.providers.ftp_directory} (h3001-ftp), {ep.sftp_root}/{demo.providers.sftp_directory} (h3002-sftp)
  provider landing    python -c "import boto3; print([o['Key'] for o in boto3.client('s3').list_objects_v2(Bucket='{demo.providers.landing_bucket}')['Contents']])"
  received ledger     table {demo.stack}-received (every version of every provider file)
  e-mails (Maildir)   ls {ep.maildir}/new
  service logs        {stack.state / "logs"}/*.log (one JSON line per event)
  routes file         {routes}
Drop more files into s3://{demo.pickup_bucket}/H1001/ (GCS), /H1002/ (SFTP), /H1003/ (S3), /H1004/ (FTP),
or onto the provider servers' folders: they are polled every few seconds.""")  # noqa: E501


def _api_access(endpoints: Endpoints, keys_path: Path) -> None:
    keys = read_local_keys(keys_path)
    wait_until(lambda: _answers(f"{endpoints.api_url}/healthz"), 60, "the status API")
    typer.echo(f"""
Status API and web page:
  web page            {endpoints.api_url}/web/
  API (OpenAPI)       {endpoints.api_url}/docs
  operator key        {keys.operator}
  read-only key       {keys.read_only}
  command line        CONVEYOR_API_KEY={keys.operator} uv run conveyor status""")


def _mail_count(maildir: str | None) -> int:
    new = Path(maildir or "") / "new"
    return len(list(new.iterdir())) if new.exists() else 0


def _wait_for_mail(maildir: str | None, expected: int, timeout: float = 60.0) -> int:
    """The job e-mails follow the last delivery by a moment (a job closes after
    its batch window): wait for them."""
    deadline = time.monotonic() + timeout
    while _mail_count(maildir) < expected and time.monotonic() < deadline:
        time.sleep(0.25)
    return _mail_count(maildir)


@app.command("up")
def up(
    state_dir: StateDir = STATE,
    once: Annotated[bool, typer.Option(help="Stop after the sample files have settled")] = False,
    scan_every: Annotated[int, typer.Option(help="Seconds between scheduled scans")] = 60,
    sync_every: Annotated[
        int, typer.Option(help="Seconds between polls of each provider source")
    ] = 5,
    timeout: Annotated[int, typer.Option(help="Seconds to wait for the samples")] = 180,
) -> None:
    """Start everything, deliver sample files to SFTP, GCS, S3 and FTP, collect the
    partners' files from FTP and SFTP, and show their progress."""
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    if state_dir.exists():
        shutil.rmtree(state_dir)
    stack = LocalStack(state_dir.resolve())
    ok = False
    try:
        typer.echo("Starting the stand-ins on 127.0.0.1:")
        endpoints = stack.start_servers()
        typer.echo("Provisioning:")
        routes = provision(endpoints, stack.demo, stack.state / "routes.yaml")
        typer.echo("Starting the services:")
        stack.start_services(routes)
        stack.start_sync_schedule(sync_every)
        stack.write_env_file()
        os.environ.update(aws_env(endpoints))
        os.environ.pop("AWS_CA_BUNDLE", None)
        session = boto3.Session()
        watcher = ProgressWatcher(session, stack.demo.stack, stack.demo.pickup_bucket)
        typer.echo("Dropping sample files into the pick-ups:")
        watcher.drop_samples()
        typer.echo("Publishing sample files on the partners' servers:")
        audiences = {s["id"]: s["audience"] for s in stack.demo.routes(endpoints)["sources"]}
        received = ReceivedWatcher(session, stack.demo.stack, audiences, typer.echo)
        publish_samples(stack.demo.providers, endpoints, received)

        def supervise() -> None:
            stack.supervise(typer.echo)

        ok = watcher.wait_settled(timeout, supervise, received)
        delivered = sum(f.state == "delivered" for f in watcher.files.values())
        # One "job started" and one "job finished" e-mail per client's job.
        mails = _wait_for_mail(endpoints.maildir, 2 * len(SAMPLES))
        typer.echo(
            f"\n{delivered} of {len(watcher.files)} file(s) delivered; "
            f"{mails} e-mail(s) in the local mailbox.\n"
            f"{received.handed_off} of {len(received.files)} provider file(s) collected into "
            f"{stack.demo.providers.landing} and handed off."
        )
        _where_to_look(stack, routes)
        _api_access(endpoints, stack.state / "api-keys.json")
        if once:
            if not ok:
                raise typer.Exit(1)
            return
        typer.echo("\nRunning; press Ctrl-C to stop everything.")
        scanner_queue = session.client("sqs").get_queue_url(
            QueueName=f"{stack.demo.stack}-scanner"
        )["QueueUrl"]
        next_scan = time.monotonic() + scan_every
        while True:
            supervise()
            watcher.poll()
            received.poll()
            if time.monotonic() >= next_scan:
                _send_scan_request(session, scanner_queue)
                next_scan = time.monotonic() + scan_every
            time.sleep(1)
    except StandInExited as exc:
        ok = False
        typer.echo(f"\nstopped: {exc}")
    except KeyboardInterrupt:
        ok = True
        typer.echo("\nStopping...")
    finally:
        stack.stop()
        typer.echo("Everything the local stack started has stopped.")
    if not ok:
        raise typer.Exit(1)


@app.command("env")
def env(state_dir: StateDir = STATE) -> None:
    """Print the running local stack's endpoints and credentials as shell exports."""
    path = state_dir / "env.json"
    try:
        state = json.loads(path.read_text())
        os.kill(int(state["pid"]), 0)
    except (FileNotFoundError, ProcessLookupError, KeyError, ValueError):
        typer.echo("No local stack is running; start one with: uv run conveyor dev up", err=True)
        raise typer.Exit(1) from None
    for key, value in state["exports"].items():
        typer.echo(f"export {key}='{value}'")


def _send_scan_request(session: boto3.Session, queue_url: str) -> None:
    """What the EventBridge schedule sends in production; moto's never fires."""
    session.client("sqs").send_message(
        QueueUrl=queue_url,
        MessageBody=json.dumps({"kind": "scan.requested", "v": 1, "reason": "schedule"}),
    )


@app.command("schedule")
def schedule(
    every: Annotated[int, typer.Option(help="Seconds between scheduled scans")] = 900,
    stack: Annotated[str, typer.Option(help="Stack name")] = "conveyor",
) -> None:
    """Send the scan schedule's message to the scanner queue every EVERY seconds
    (docker-compose's stand-in for EventBridge)."""
    session = boto3.Session()
    url = session.client("sqs").get_queue_url(QueueName=f"{stack}-scanner")["QueueUrl"]
    while True:
        _send_scan_request(session, url)
        time.sleep(every)


@app.command("compose-init")
def compose_init(
    state: Annotated[Path, typer.Option(help="The volume shared with the stand-ins")] = Path(
        "/state"
    ),
) -> None:
    """Prepare docker-compose's stand-ins: sshd's keys and config, the deployed
    template, the demo clients and their routes file."""
    sshd = prepare_sshd(state / "sshd", state / "sftp-root", 2222, listen="0.0.0.0")  # noqa: S104
    endpoints = Endpoints(
        aws_url=os.environ["AWS_ENDPOINT_URL"],
        gcs_url=os.environ["STORAGE_EMULATOR_HOST"],
        sftp_host="sftp",
        sftp_port=2222,
        sftp_user="root",
        sftp_host_key=sshd.host_key,
        sftp_client_key_path=str(sshd.client_key_path),
        sftp_root=str(state / "sftp-root"),
        smtp_host="smtp",
        smtp_port=1025,
        ftp_host="ftp",
        ftp_port=2121,
        ftp_user="partner",
        ftp_password=LOCAL_FTP_PASSWORD,
        maildir=str(state / "mail"),
    )
    for url in (f"{endpoints.aws_url}/moto-api/", f"{endpoints.gcs_url}/storage/v1/b"):
        wait_until(functools.partial(_answers, url), 120, url)
    provision(endpoints, DemoClients(), state / "routes.yaml")
