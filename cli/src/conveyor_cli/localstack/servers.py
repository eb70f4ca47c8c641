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


#: moto's server, with DynamoDB calls made one at a time (see the module).
MOTO_MODULE = "conveyor_cli.localstack.moto_server"


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
        [sys.executable, "-m", MOTO_MODULE, "-H", "127.0.0.1", "-p", str(port)],
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


@dataclass(frozen=True)
class SshdFiles:
    """An sshd's configuration, host key and the client key it lets in."""

    config: Path
    host_key: str
    client_key_path: Path
    client_public_key: str


def prepare_sshd(
    home: Path,
    root: Path,
    port: int,
    *,
    listen: str = "127.0.0.1",
    sftp_flags: tuple[str, ...] = (),
    password_authentication: bool = False,
    sftp_only: bool = False,
) -> SshdFiles:
    """Write an sshd_config, a host key and an authorized client key under ``home``.

    ``root`` is where SFTP sessions start; relative paths resolve against it.
    Shell commands are allowed too, so that ``md5sum`` can verify uploads.
    ``sftp_flags`` are passed to ``internal-sftp`` (``-R`` serves read-only,
    ``-P posix-rename`` refuses that extension); ``password_authentication``
    lets a client try passwords (which fail unless the user has one: this is
    for testing rejected passwords); ``sftp_only`` forces every session into
    SFTP, as hosting providers do, so commands such as ``md5sum`` cannot run.
    """
    home.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    host_key = _keygen(home / "ssh_host_ed25519_key")
    client_public = _keygen(home / "client_ed25519")
    (home / "authorized_keys").write_text(client_public + "\n")
    config = home / "sshd_config"
    passwords = "yes" if password_authentication else "no"
    subsystem = " ".join(["internal-sftp", "-d", str(root), *sftp_flags])
    config.write_text(
        f"Port {port}\nListenAddress {listen}\n"
        f"HostKey {home / 'ssh_host_ed25519_key'}\nPidFile {home / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {home / 'authorized_keys'}\n"
        f"UsePAM no\nStrictModes no\nPermitRootLogin yes\nPasswordAuthentication {passwords}\n"
        "KbdInteractiveAuthentication no\nMaxSessions 64\nMaxStartups 64:30:128\n"
        f"Subsystem sftp {subsystem}\nLogLevel INFO\n"
        + (f"ForceCommand {subsystem}\n" if sftp_only else "")
    )
    return SshdFiles(config, host_key, home / "client_ed25519", client_public)


def start_sshd(
    state: Path,
    root: Path | None = None,
    *,
    name: str = "sshd",
    sftp_flags: tuple[str, ...] = (),
    password_authentication: bool = False,
    sftp_only: bool = False,
) -> Sshd:
    """OpenSSH's sshd as the SFTP peer, allowing the current user in with a key
    (``prepare_sshd`` says what the options do). ``name`` keeps a second
    server's host key, config and log apart from the first's."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        raise RuntimeError("OpenSSH's sshd is not installed (scripts/bootstrap installs it)")
    root = root or state / "sftp-root"
    port = free_port()
    files = prepare_sshd(
        state / name,
        root,
        port,
        sftp_flags=sftp_flags,
        password_authentication=password_authentication,
        sftp_only=sftp_only,
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    proc = ManagedProcess(
        name, [sshd, "-D", "-e", "-f", str(files.config)], state / "logs" / f"{name}.log"
    ).start()
    proc.wait_for_port(port)
    return Sshd(
        proc,
        port,
        root,
        getpass.getuser(),
        files.host_key,
        files.client_key_path,
        files.client_public_key,
    )


@dataclass
class FtpServer:
    process: ManagedProcess
    port: int
    root: Path
    username: str
    password: str


#: The FTP stand-in's login: a throwaway for a server on 127.0.0.1, not a secret.
LOCAL_FTP_PASSWORD = "partner-pass"  # noqa: S105


def start_ftp(
    state: Path, username: str = "partner", password: str = LOCAL_FTP_PASSWORD
) -> FtpServer:
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
    #: With STARTTLS: the server's self-signed certificate, for clients to trust.
    certificate: Path | None = None
    #: With authentication: the one login the server accepts.
    username: str | None = None
    password: str | None = None

    def messages(self) -> list[bytes]:
        """Every message received so far, oldest first."""
        new = self.maildir / "new"
        if not new.exists():
            return []
        files = sorted(new.iterdir(), key=lambda p: p.stat().st_mtime_ns)
        return [f.read_bytes() for f in files]


def start_smtp(
    state: Path,
    *,
    port: int | None = None,
    starttls: bool = False,
    username: str | None = None,
    password: str | None = None,
) -> SmtpServer:
    """aiosmtpd, writing every message it accepts into the Maildir ``state/mail``.

    ``port`` listens there instead of on a free port (to start a server that a
    client is already trying to reach). ``starttls`` offers STARTTLS with a
    fresh self-signed certificate for 127.0.0.1 and requires it before mail;
    ``username`` and ``password`` make AUTH required and accept only that
    login (over TLS when ``starttls``). aiosmtpd's command cannot check
    passwords, so a secured server is a few lines of Python on its API.
    """
    port = port or free_port()
    maildir = state / "mail"
    log = state / "logs" / "smtp.log"
    if not starttls and username is None:
        argv = [_bin("aiosmtpd"), "-n", "-l", f"127.0.0.1:{port}"]
        proc = ManagedProcess(
            "smtp", [*argv, "-c", "aiosmtpd.handlers.Mailbox", str(maildir)], log
        ).start()
        proc.wait_for_port(port)
        return SmtpServer(proc, port, maildir)
    certificate = key = None
    if starttls:
        certificate, key = state / "smtp-cert.pem", state / "smtp-key.pem"
        names = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
        files = ["-keyout", str(key), "-out", str(certificate)]
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                *names,
                *files,
            ],
            check=True,
            capture_output=True,
        )
    script = """
import asyncio, os, ssl, sys
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

port, maildir, cert, key = sys.argv[1:5]
login, password = os.environ["SMTP_LOGIN"].encode(), os.environ["SMTP_PASSWORD"].encode()
tls = None
if cert:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
mailbox = Mailbox(maildir)

def check(server, session, envelope, mechanism, data):
    given = (data.login, data.password) if isinstance(data, LoginPassword) else None
    return AuthResult(success=given == (login, password), handled=False)

def protocol():
    return SMTP(
        mailbox, hostname="127.0.0.1", tls_context=tls, require_starttls=tls is not None,
        authenticator=check if login else None, auth_required=bool(login),
        auth_require_tls=tls is not None,
    )

async def main():
    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", int(port))
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""
    proc = ManagedProcess(
        "smtp",
        [
            sys.executable,
            "-c",
            script,
            str(port),
            str(maildir),
            str(certificate or ""),
            str(key or ""),
        ],
        log,
        env={**os.environ, "SMTP_LOGIN": username or "", "SMTP_PASSWORD": password or ""},
    ).start()
    proc.wait_for_port(port)
    return SmtpServer(proc, port, maildir, certificate, username, password)
