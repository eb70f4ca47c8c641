"""The README's first command: `conveyor dev up` runs the whole product on the
embedded local stack, `conveyor dev env` describes it while it runs, a crashed
service is restarted, and Ctrl-C stops everything it started.

One `dev up` serves the whole module (starting one takes 15-30 s); the test
that stops it comes last."""

from __future__ import annotations

import ftplib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support import json_lines

CONVEYOR = [sys.executable, "-m", "conveyor_cli.main"]
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STORAGE_"))}
#: Scans and provider polls every 2 s instead of every minute (moto fires no schedules).
FAST = ["--scan-every", "2", "--sync-every", "2"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of ours is gone for every practical purpose.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class DevUp:
    """A running `conveyor dev up`, its output collected line by line as it comes
    (by a thread, so that waiting for a line that never comes times out)."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.proc = subprocess.Popen(
            [*CONVEYOR, "dev", "up", "--state-dir", str(state), *FAST],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=ENV,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, needle: str, timeout: float) -> str:
        """The output up to and including the first line containing ``needle``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for i, line in enumerate(self.lines):
                    if needle in line:
                        return "".join(self.lines[: i + 1])
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    output = "".join(self.lines)
                    raise AssertionError(f"{needle!r} not printed within {timeout}s:\n{output}")
                self._changed.wait(min(left, 1.0))

    def processes(self) -> dict[str, int]:
        return dict(json.loads((self.state / "env.json").read_text())["processes"])

    def exports(self) -> dict[str, str]:
        exported = subprocess.run(
            [*CONVEYOR, "dev", "env", "--state-dir", str(self.state)],
            capture_output=True,
            text=True,
            check=True,
            env=ENV,
        ).stdout
        pairs = (line.removeprefix("export ").split("=", 1) for line in exported.splitlines())
        return {k: v.strip("'") for k, v in pairs}

    def s3(self) -> Any:
        exports = self.exports()
        return boto3.client(
            "s3",
            endpoint_url=exports["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
        )


def ftp_sizes(exports: dict[str, str], directory: str) -> dict[str, int]:
    """What the FTP stand-in holds in ``directory``, read over FTP as a partner would."""
    with ftplib.FTP() as ftp:  # noqa: S321 - the local stand-in speaks plain FTP
        ftp.connect(exports["CONVEYOR_FTP_HOST"], int(exports["CONVEYOR_FTP_PORT"]), timeout=10)
        ftp.login(exports["CONVEYOR_FTP_USER"], exports["CONVEYOR_FTP_PASSWORD"])
        ftp.voidcmd("TYPE I")
        return {
            name: int(facts["size"])
            for name, facts in ftp.mlsd(directory)
            if facts.get("type") == "file"
        }


#: What the provider servers of the local stack hold when it starts.
PROVIDER_FILES = {
    ("h3001-ftp", "remittance_2026-11.csv"),
    ("h3001-ftp", "care_gaps_2026-12-01.txt"),
    ("h3002-sftp", "lab_feed_2026-12-01.csv"),
}


def landed(dev_up: DevUp) -> dict[tuple[str, str], int]:
    """(source, file name) -> size of every copy in the provider landing."""
    listing = dev_up.s3().list_objects_v2(
        Bucket=dev_up.exports()["CONVEYOR_LANDING_BUCKET"], Prefix="partners/"
    )
    found = {}
    for item in listing.get("Contents", []):
        source, *_, name = item["Key"].removeprefix("partners/").split("/")
        found[(source, name)] = item["Size"]
    return found


def test_dev_up_once_collects_the_partners_files_and_stops(tmp_path: Path) -> None:
    """``--once``: the samples are delivered, the partners' files arrive from
    the FTP and SFTP servers, then everything stops."""
    once = subprocess.run(
        [*CONVEYOR, "dev", "up", "--once", "--state-dir", str(tmp_path / "dev"), *FAST],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert once.returncode == 0, once.stdout[-3000:] + once.stderr[-2000:]
    assert "3 of 3 provider file(s) collected into s3://conveyor-provider-landing/partners/" in (
        once.stdout
    )
    for source, name in PROVIDER_FILES:
        shown = re.findall(
            rf"^ +\S+ +{source} +{re.escape(name)} +(\w+(?: \w+)?) ", once.stdout, re.M
        )
        assert (shown[0], shown[-1]) == ("on server", "handed off"), (source, name, shown)
    assert "handed off to the care_team" in once.stdout
    assert "handed off to the process" in once.stdout
    assert "Everything the local stack started has stopped." in once.stdout


@pytest.fixture(scope="module")
def dev_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevUp]:
    running = DevUp(tmp_path_factory.mktemp("dev-up") / "dev")
    try:
        running.wait_for("press Ctrl-C", timeout=180)
        yield running
    finally:
        if running.proc.poll() is None:  # a test failed half-way: stop it as a person would
            running.proc.send_signal(signal.SIGINT)
            try:
                running.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                running.proc.kill()
                running.proc.wait()


def test_dev_up_delivers_samples_everywhere(dev_up: DevUp) -> None:
    output = dev_up.wait_for("press Ctrl-C", timeout=1)
    assert "7 of 7 file(s) delivered; 8 e-mail(s) in the local mailbox." in output
    for destination in (
        "gs://h1001-inbound/monthly/claims_2026-11.csv",
        "/inbound/H1002/roster_2026-11-21.csv",
        "s3://h1003-deliveries/incoming/lab_results_2026-11.csv",
        "/deliveries/H1004/claims_2026-11-28.csv",
    ):
        assert destination in output

    listed = dev_up.s3().list_objects_v2(Bucket="h1003-deliveries")["Contents"]
    assert sorted(o["Key"] for o in listed) == [
        "incoming/lab_results_2026-11.csv",
        "incoming/pharmacy_2026-11.csv",
    ]
    delivered = Path(dev_up.exports()["CONVEYOR_SFTP_ROOT"]) / "inbound/H1002/roster_2026-11-21.csv"
    assert delivered.stat().st_size == 1_500_000
    assert ftp_sizes(dev_up.exports(), "deliveries/H1004") == {"claims_2026-11-28.csv": 2_000_000}

    # The local stack drives the scan schedule itself (moto's never fires).
    until(
        lambda: any(
            e.get("event") == "scan.finished"
            for e in json_lines(dev_up.state / "logs" / "scanner.log")
        ),
        30,
        "a scheduled scan",
    )


def test_dev_up_polls_the_partners_servers_on_a_schedule(dev_up: DevUp) -> None:
    assert set(landed(dev_up)) == PROVIDER_FILES
    assert landed(dev_up)[("h3002-sftp", "lab_feed_2026-12-01.csv")] == 1_200_000

    # A file the partner publishes later arrives by the local schedule's polls.
    folder = Path(dev_up.exports()["CONVEYOR_SFTP_ROOT"]) / "outbound/H3002"
    (folder / "lab_feed_2026-12-02.csv").write_bytes(b"id,result\n1,ok\n")
    until(
        lambda: ("h3002-sftp", "lab_feed_2026-12-02.csv") in landed(dev_up),
        60,
        "the later file in the landing",
    )
    output = dev_up.wait_for("lab_feed_2026-12-02.csv        handed off", timeout=30)
    assert "h3002-sftp  lab_feed_2026-12-02.csv" in output
    polls = [
        e
        for e in json_lines(dev_up.state / "logs" / "provider_sync.log")
        if e.get("event") == "poll.done"
    ]
    assert {e["source"] for e in polls} == {"h3001-ftp", "h3002-sftp"}


def test_dev_up_prints_the_api_and_keys_that_work(dev_up: DevUp) -> None:
    output = dev_up.wait_for("press Ctrl-C", timeout=1)
    keys = dict(
        re.findall(r"^ +(web page|operator key|read-only key) +(\S+)$", output, re.MULTILINE)
    )
    assert set(keys) == {"web page", "operator key", "read-only key"}, output[-2000:]
    api = keys["web page"].removesuffix("/web/")
    assert dev_up.exports()["CONVEYOR_API_URL"] == api
    cli_env = {**ENV, "CONVEYOR_API_URL": api}
    listed = subprocess.run(
        [*CONVEYOR, "files", "--client", "H1003", "--status", "success", "--json"],
        env={**cli_env, "CONVEYOR_API_KEY": keys["read-only key"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    names = {f["fileName"] for f in json.loads(listed.stdout)["items"]}
    assert names == {"lab_results_2026-11.csv", "pharmacy_2026-11.csv"}
    refused = subprocess.run(
        [*CONVEYOR, "status"], env=cli_env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 3, "no key: refused"


def test_a_killed_service_is_restarted_and_the_stack_keeps_delivering(dev_up: DevUp) -> None:
    killed = dev_up.processes()["conveyor_transfer_sftp"]
    os.kill(killed, signal.SIGKILL)

    output = dev_up.wait_for("transfer-sftp restarted", timeout=30)
    assert "transfer-sftp exited (signal 9); restarting in 1 s (restart 1)" in output
    restarted = until(
        lambda: (pid := dev_up.processes()["conveyor_transfer_sftp"]) != killed and pid,
        10,
        "the new pid in env.json",
    )
    assert alive(restarted)
    assert not alive(killed)
    log = json_lines(dev_up.state / "logs" / "transfer_sftp.log")
    assert [(e["exit"], e["restart"]) for e in log if e.get("event") == "service.restarting"] == [
        ("signal 9", 1)
    ]

    # The restarted worker delivers a file dropped after the crash.
    dev_up.s3().put_object(Bucket="conveyor-pickup", Key="H1002/after_restart.csv", Body=b"id\n1\n")
    sftp_root = Path(dev_up.exports()["CONVEYOR_SFTP_ROOT"])
    until(
        lambda: (sftp_root / "inbound/H1002/after_restart.csv").exists(),
        60,
        "the file dropped after the restart on the SFTP server",
    )
    assert dev_up.proc.poll() is None


def test_ctrl_c_stops_everything_it_started(dev_up: DevUp) -> None:
    processes = dev_up.processes()
    assert set(processes) >= {
        "moto",
        "gcs-emulator",
        "sshd",
        "ftp",
        "smtp",
        "conveyor_scanner",
        "conveyor_notifier",
        "conveyor_provider_sync",
    }
    dev_up.proc.send_signal(signal.SIGINT)
    # Services drain what they hold first (up to their drain bound).
    assert dev_up.proc.wait(timeout=150) == 0
    assert [name for name, pid in processes.items() if alive(pid)] == []
    gone = subprocess.run(
        [*CONVEYOR, "dev", "env", "--state-dir", str(dev_up.state)],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert gone.returncode == 1
    assert "No local stack is running" in gone.stderr
