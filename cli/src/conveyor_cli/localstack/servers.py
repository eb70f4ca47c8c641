"""One function per stand-in: start it on a free 127.0.0.1 port, wait until it
answers, and return a handle saying how to reach it.

* moto in server mode: S3, SQS, SNS, DynamoDB, Secrets Manager, SES, CloudFormation
* gcp-storage-emulator: Google Cloud Storage
* OpenSSH's sshd with its own host key, authorized key and config: SFTP
* pyftpdlib: FTP
* aiosmtpd writing every message into a Maildir: SMTP
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from conveyor_cli.localstack.processes import ManagedProcess, free_port, wait_until

LOCAL_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # moto's convention; not a secret
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def _bin(name: str) -> str:
    """A console script installed next to this interpreter (the project's venv)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


@dataclass
class Moto:
    process: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {**LOCAL_AWS_ENV, "AWS_ENDPOINT_URL": self.url}


def start_moto(state: Path) -> Moto:
    port = free_port()
    env = {**os.environ, "MOTO_PORT": str(port)}
    proc = ManagedProcess(
        "moto",
        [_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        state / "logs" / "moto.log",
        env=env,
    ).start()

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1):
                return True
        except OSError:
            return False

    wait_until(answers, 60, "moto_server", proc.process, proc.log_path)
    return Moto(proc, port)


@dataclass
class GcsEmulator:
    process: ManagedProcess
    port: int

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.host}


def start_gcs(state: Path) -> GcsEmulator:
    port = free_port()
    data = state / "gcs"
    data.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "STORAGE_BASE": str(data)}
    proc = ManagedProcess(
        "gcs-emulator",
        [_bin("gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(port), "-q"],
        state / "logs" / "gcs.log",
        env=env,
        cwd=data,
    ).start()
    proc.wait_for_port(port)
    return GcsEmulator(proc, port)


@dataclass
class Sshd:
    process: ManagedProcess
    port: int
    root: Path
    username: str
    #: The server's public host key line ("ssh-ed25519 AAAA...").
    host_key: str
    client_key_path: Path
    client_public_key: str

    @property
    def private_key(self) -> str:
        return self.client_key_path.read_text()


def _keygen(path: Path) -> str:
    if not path.exists():
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "conveyor-local",
                "-f",
                str(path),
            ],
            check=True,
        )
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def start_sshd(state: Path, root: Path | None = None) -> Sshd:
    """OpenSSH's sshd as the SFTP peer, allowing the current user in with a key.

    ``root`` is where SFTP sessions start; relative paths resolve against it.
    Shell commands are allowed too, so that ``md5sum`` can verify uploads.
    """
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        raise RuntimeError("OpenSSH's sshd is not installed (scripts/bootstrap installs it)")
    home = state / "sshd"
    home.mkdir(parents=True, exist_ok=True)
    root = root or state / "sftp-root"
    root.mkdir(parents=True, exist_ok=True)
    host_key = _keygen(home / "ssh_host_ed25519_key")
    client_public = _keygen(home / "client_ed25519")
    (home / "authorized_keys").write_text(client_public + "\n")
    port = free_port()
    config = home / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\n"
        f"HostKey {home / 'ssh_host_ed25519_key'}\nPidFile {home / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {home / 'authorized_keys'}\n"
        "UsePAM no\nStrictModes no\nPermitRootLogin yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nMaxSessions 64\nMaxStartups 64:30:128\n"
        f"Subsystem sftp internal-sftp -d {root}\nLogLevel INFO\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    proc = ManagedProcess(
        "sshd", [sshd, "-D", "-e", "-f", str(config)], state / "logs" / "sshd.log"
    ).start()
    proc.wait_for_port(port)
    return Sshd(
        proc, port, root, getpass.getuser(), host_key, home / "client_ed25519", client_public
    )


@dataclass
class FtpServer:
    process: ManagedProcess
    port: int
    root: Path
    username: str
    password: str


def start_ftp(state: Path, username: str = "partner", password: str = "partner-pass") -> FtpServer:  # noqa: S107 - local stand-in
    port = free_port()
    root = state / "ftp-root"
    root.mkdir(parents=True, exist_ok=True)
    passive = free_port()
    proc = ManagedProcess(
        "ftp",
        [
            sys.executable,
            "-m",
            "pyftpdlib",
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "-d",
            str(root),
            "-u",
            username,
            "-P",
            password,
            "-r",
            f"{passive}-{passive + 20}",
        ],
        state / "logs" / "ftp.log",
    ).start()
    proc.wait_for_port(port)
    return FtpServer(proc, port, root, username, password)


@dataclass
class SmtpServer:
    process: ManagedProcess
    port: int
    maildir: Path

    def messages(self) -> list[bytes]:
        """Every message received so far, oldest first."""
        new = self.maildir / "new"
        if not new.exists():
            return []
        files = sorted(new.iterdir(), key=lambda p: p.stat().st_mtime_ns)
        return [f.read_bytes() for f in files]


def start_smtp(state: Path) -> SmtpServer:
    port = free_port()
    maildir = state / "mail"
    proc = ManagedProcess(
        "smtp",
        [
            _bin("aiosmtpd"),
            "-n",
            "-l",
            f"127.0.0.1:{port}",
            "-c",
            "aiosmtpd.handlers.Mailbox",
            str(maildir),
        ],
        state / "logs" / "smtp.log",
    ).start()
    proc.wait_for_port(port)
    return SmtpServer(proc, port, maildir)
