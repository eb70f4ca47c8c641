"""The README's first command: `conveyor dev up` runs the whole product on the
embedded local stack, `conveyor dev env` describes it while it runs, and
Ctrl-C stops everything it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3

from tests.support import json_lines

CONVEYOR = [sys.executable, "-m", "conveyor_cli.main"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of ours is gone for every practical purpose.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not printed within {timeout}s:\n{''.join(lines)}")


def test_dev_up_delivers_samples_everywhere_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    state = tmp_path / "dev"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STORAGE_"))}
    proc = subprocess.Popen(
        [*CONVEYOR, "dev", "up", "--state-dir", str(state), "--scan-every", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        output = "".join(wait_for_line(proc, "press Ctrl-C", timeout=180))
        assert "6 of 6 file(s) delivered; 6 e-mail(s) in the local mailbox." in output
        for destination in (
            "gs://h1001-inbound/monthly/claims_2026-11.csv",
            "/inbound/H1002/roster_2026-11-21.csv",
            "s3://h1003-deliveries/incoming/lab_results_2026-11.csv",
        ):
            assert destination in output

        exported = subprocess.run(
            [*CONVEYOR, "dev", "env", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout
        exports = dict(line.removeprefix("export ").split("=", 1) for line in exported.splitlines())
        exports = {k: v.strip("'") for k, v in exports.items()}
        s3 = boto3.client(
            "s3",
            endpoint_url=exports["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
        )
        listed = s3.list_objects_v2(Bucket="h1003-deliveries")["Contents"]
        assert sorted(o["Key"] for o in listed) == [
            "incoming/lab_results_2026-11.csv",
            "incoming/pharmacy_2026-11.csv",
        ]
        delivered = Path(exports["CONVEYOR_SFTP_ROOT"]) / "inbound/H1002/roster_2026-11-21.csv"
        assert delivered.stat().st_size == 1_500_000

        # The local stack drives the scan schedule itself (moto's never fires).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(
                e.get("event") == "scan.finished"
                for e in json_lines(state / "logs" / "scanner.log")
            ):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("no scheduled scan ran")

        processes = json.loads((state / "env.json").read_text())["processes"]
        assert set(processes) >= {
            "moto",
            "gcs-emulator",
            "sshd",
            "ftp",
            "smtp",
            "conveyor_scanner",
            "conveyor_notifier",
        }
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert [name for name, pid in processes.items() if alive(pid)] == []
        gone = subprocess.run(
            [*CONVEYOR, "dev", "env", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            env=env,
        )
        assert gone.returncode == 1
        assert "No local stack is running" in gone.stderr
    finally:
        if proc.poll() is None:  # the test failed half-way: stop it the way a person would
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
