"""Real FTP servers for the FTP backend's tests: pyftpdlib, vsftpd, proftpd and
pure-ftpd, each a plain process on free 127.0.0.1 ports with its own
configuration in a temporary directory, stopped by its pid.

``scripts/bootstrap`` installs vsftpd and unpacks proftpd and pure-ftpd under
``/opt/conveyor-ftp-servers`` (Debian allows one installed FTP server). FTPS
uses a self-signed certificate the fixture generates for ``127.0.0.1``.

How each server lets the tests in:

* pyftpdlib: its own user and password.
* proftpd: a user in its own ``AuthUserFile`` (a crypt(3) hash), mapped to
  ``nobody``; overwrite refused (the default), session reuse required (the
  default of mod_tls); mod_digest loaded, so it offers server hashes.
* pure-ftpd: a user checked by ``pure-authd`` running a script that compares
  the password; mapped to ``nobody``.
* vsftpd: anonymous with upload, rename and delete allowed (Debian's vsftpd
  authenticates local users only through PAM, which cannot be pointed at a
  private password file without editing ``/etc/pam.d``). ``require_ssl_reuse``
  is on, as in vsftpd's defaults.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import psutil
import pytest

from conveyor_cli.localstack.processes import ManagedProcess, free_port

FTP_SERVERS = Path("/opt/conveyor-ftp-servers")
VSFTPD = Path("/usr/sbin/vsftpd")
PROFTPD = FTP_SERVERS / "proftpd-core/usr/sbin/proftpd"
PROFTPD_MODULES = (
    FTP_SERVERS / "proftpd-mod-crypto/usr/lib/proftpd/mod_tls.so",
    FTP_SERVERS / "proftpd-core/usr/lib/proftpd/mod_digest.so",
)
PURE_FTPD = FTP_SERVERS / "pure-ftpd/usr/sbin/pure-ftpd"
PURE_AUTHD = FTP_SERVERS / "pure-ftpd/usr/sbin/pure-authd"

Kind = Literal["pyftpdlib", "vsftpd", "proftpd", "pure-ftpd"]
Tls = Literal["none", "explicit", "implicit"]
KINDS: tuple[Kind, ...] = ("pyftpdlib", "vsftpd", "proftpd", "pure-ftpd")
#: A throwaway login for servers on 127.0.0.1, not a secret.
PASSWORD = "ftp-test-pass"
NOBODY = 65534
PASSIVE_PORTS = 10


@dataclass
class FtpTestServer:
    kind: Kind
    tls: Tls
    port: int
    #: What the FTP user sees as "/", on this machine's file system.
    root: Path
    username: str
    password: str
    #: The self-signed certificate (PEM) when ``tls`` is not "none".
    certificate: str | None
    #: The first and last port of the server's passive (data connection) range.
    passive_ports: tuple[int, int]
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def credentials(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def _certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            # 127.0.0.2: where tests put proxies in front of the server.
            *("-addext", "subjectAltName=IP:127.0.0.1,IP:127.0.0.2"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _passive_range() -> tuple[int, int]:
    first = free_port()
    return first, first + PASSIVE_PORTS - 1


def _pyftpdlib(base: Path, port: int, root: Path, tls: Tls) -> FtpTestServer:
    if tls != "none":
        raise ValueError("pyftpdlib's FTPS needs pyOpenSSL; FTPS is tested on vsftpd and proftpd")
    low, high = _passive_range()
    argv = [sys.executable, "-m", "pyftpdlib", "-i", "127.0.0.1", "-p", str(port), "-w"]
    argv += ["-d", str(root), "-u", "partner", "-P", PASSWORD, "-r", f"{low}-{high}"]
    process = ManagedProcess("pyftpdlib", argv, base / "pyftpdlib.log").start()
    return FtpTestServer(
        "pyftpdlib", tls, port, root, "partner", PASSWORD, None, (low, high), [process]
    )


def _vsftpd(base: Path, port: int, root: Path, tls: Tls) -> FtpTestServer:
    low, high = _passive_range()
    config = textwrap.dedent(f"""\
        listen=YES
        listen_ipv6=NO
        listen_address=127.0.0.1
        listen_port={port}
        background=NO
        seccomp_sandbox=NO
        anonymous_enable=YES
        local_enable=NO
        write_enable=YES
        anon_upload_enable=YES
        anon_mkdir_write_enable=YES
        anon_other_write_enable=YES
        anon_world_readable_only=NO
        anon_umask=022
        anon_root={root}
        no_anon_password=YES
        pasv_min_port={low}
        pasv_max_port={high}
        utf8_filesystem=YES
        syslog_enable=NO
        xferlog_enable=NO
        log_ftp_protocol=YES
        vsftpd_log_file={base / "vsftpd-protocol.log"}
        """)
    certificate = None
    if tls != "none":
        cert, key = _certificate(base)
        certificate = cert.read_text()
        config += textwrap.dedent(f"""\
            ssl_enable=YES
            allow_anon_ssl=YES
            force_anon_logins_ssl=YES
            force_anon_data_ssl=YES
            require_ssl_reuse=YES
            implicit_ssl={"YES" if tls == "implicit" else "NO"}
            rsa_cert_file={cert}
            rsa_private_key_file={key}
            """)
    path = base / "vsftpd.conf"
    path.write_text(config)
    process = ManagedProcess("vsftpd", [str(VSFTPD), str(path)], base / "vsftpd.log").start()
    return FtpTestServer(
        "vsftpd", tls, port, root, "anonymous", "", certificate, (low, high), [process]
    )


def _crypt(password: str) -> str:
    result = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"],
        input=password,
        text=True,
        check=True,
        capture_output=True,
    )
    return result.stdout.strip()


def _proftpd(base: Path, port: int, root: Path, tls: Tls) -> FtpTestServer:
    """proftpd with mod_digest, so its FEAT offers HASH, XMD5, XSHA256, XCRC."""
    low, high = _passive_range()
    modules = base / "modules"  # one ModulePath for modules from two packages
    modules.mkdir()
    for module in PROFTPD_MODULES:
        (modules / module.name).symlink_to(module)
    (base / "passwd").write_text(
        f"partner:{_crypt(PASSWORD)}:{NOBODY}:{NOBODY}::{root}:/bin/false\n"
    )
    (base / "group").write_text(f"nogroup:x:{NOBODY}:\n")
    for name in ("passwd", "group"):
        (base / name).chmod(0o600)  # proftpd refuses world-readable ones
    config = textwrap.dedent(f"""\
        ServerType standalone
        DefaultServer on
        UseIPv6 off
        DefaultAddress 127.0.0.1
        SocketBindTight on
        Port {port}
        User nobody
        Group nogroup
        PidFile {base / "proftpd.pid"}
        ScoreboardFile {base / "proftpd.scoreboard"}
        DelayTable none
        WtmpLog off
        UseReverseDNS off
        SystemLog {base / "proftpd-system.log"}
        TransferLog none
        ModulePath {modules}
        LoadModule mod_digest.c
        DigestEngine on
        DigestAlgorithms md5 sha1 sha256 crc32
        AuthOrder mod_auth_file.c
        AuthUserFile {base / "passwd"}
        AuthGroupFile {base / "group"}
        AuthPAM off
        RequireValidShell off
        DefaultRoot ~
        PassivePorts {low} {high}
        Umask 022
        """)
    certificate = None
    if tls != "none":
        cert, key = _certificate(base)
        certificate = cert.read_text()
        options = "UseImplicitSSL" if tls == "implicit" else ""
        config += textwrap.dedent(f"""\
            LoadModule mod_tls.c
            TLSEngine on
            TLSRequired on
            TLSProtocol TLSv1.2 TLSv1.3
            TLSRSACertificateFile {cert}
            TLSRSACertificateKeyFile {key}
            TLSVerifyClient off
            TLSLog {base / "proftpd-tls.log"}
            """)
        if options:
            config += f"TLSOptions {options}\n"
    path = base / "proftpd.conf"
    path.write_text(config)
    argv = [str(PROFTPD), "--nodaemon", "-c", str(path)]
    process = ManagedProcess("proftpd", argv, base / "proftpd.log").start()
    return FtpTestServer(
        "proftpd", tls, port, root, "partner", PASSWORD, certificate, (low, high), [process]
    )


def _pure_ftpd(base: Path, port: int, root: Path, tls: Tls) -> FtpTestServer:
    if tls == "implicit":
        raise ValueError("pure-ftpd offers explicit FTPS only")
    low, high = _passive_range()
    check = base / "authenticate"
    check.write_text(
        textwrap.dedent(f"""\
            #!/bin/sh
            if [ "$AUTHD_ACCOUNT" = partner ] && [ "$AUTHD_PASSWORD" = '{PASSWORD}' ]; then
              printf 'auth_ok:1\\nuid:{NOBODY}\\ngid:{NOBODY}\\ndir:{root}\\nend\\n'
            else
              printf 'auth_ok:-1\\nend\\n'
            fi
            """)
    )
    check.chmod(0o755)
    socket = base / "authd.sock"
    authd = ManagedProcess(
        "pure-authd", [str(PURE_AUTHD), "-s", str(socket), "-r", str(check)], base / "authd.log"
    ).start()
    argv = [str(PURE_FTPD), "-S", f"127.0.0.1,{port}", "-p", f"{low}:{high}", "-E", "-A", "-H"]
    argv += ["-l", f"extauth:{socket}", "-4"]
    certificate = None
    if tls == "explicit":
        cert, key = _certificate(base)
        certificate = cert.read_text()
        argv += ["-Y", "2", "-2", f"{cert},{key}"]
    server = ManagedProcess("pure-ftpd", argv, base / "pure-ftpd.log").start()
    return FtpTestServer(
        "pure-ftpd", tls, port, root, "partner", PASSWORD, certificate, (low, high), [authd, server]
    )


_STARTERS = {
    "pyftpdlib": _pyftpdlib,
    "vsftpd": _vsftpd,
    "proftpd": _proftpd,
    "pure-ftpd": _pure_ftpd,
}


def start_ftp_server(kind: Kind, tls: Tls = "none") -> FtpTestServer:
    """Start ``kind`` and wait until it accepts connections.

    Its files live in a fresh directory under the system's temporary
    directory, world-traversable because the Debian servers write as
    ``nobody`` (or vsftpd's ``ftp``): give a test its own directory under
    ``root`` with ``writable_directory``. ``stop_ftp_server`` removes it all.
    """
    base = Path(tempfile.mkdtemp(prefix=f"conveyor-{kind}-"))
    base.chmod(0o755)
    root = base / "root"
    root.mkdir()  # not writable by the FTP user: vsftpd refuses a writable chroot
    server = _STARTERS[kind](base, free_port(), root, tls)
    try:
        server.processes[-1].wait_for_port(server.port)
    except BaseException:
        stop_ftp_server(server)
        raise
    return server


def stop_ftp_server(server: FtpTestServer) -> None:
    server.stop()
    shutil.rmtree(server.root.parent, ignore_errors=True)


class FtpServers:
    """Starts each (kind, tls) once per test session, on first use."""

    def __init__(self) -> None:
        self._running: dict[tuple[Kind, Tls], FtpTestServer] = {}

    def get(self, kind: Kind, tls: Tls = "none") -> FtpTestServer:
        if (kind, tls) not in self._running:
            self._running[kind, tls] = start_ftp_server(kind, tls)
        return self._running[kind, tls]

    def stop(self) -> None:
        for server in self._running.values():
            with contextlib.suppress(Exception):
                stop_ftp_server(server)
        self._running.clear()


@pytest.fixture(scope="session")
def ftp_servers() -> Iterator[FtpServers]:
    """Real FTP servers by kind and TLS mode: ``ftp_servers.get("vsftpd", "explicit")``."""
    servers = FtpServers()
    yield servers
    servers.stop()


def drop_sessions(server: FtpTestServer) -> None:
    """Kill the processes serving the server's sessions (vsftpd, proftpd and
    pure-ftpd fork one or two per session), as a server crash or a network cut
    would end them: every control and data connection drops at once, and the
    listener takes new connections."""
    listener = psutil.Process(server.processes[-1].pid)
    for child in listener.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def files_under(root: Path) -> list[str]:
    """Every file below ``root``, relative, sorted: what a peer sees on disk."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def writable_directory(server: FtpTestServer, name: str) -> Path:
    """A new directory under the server's root that its FTP user may write to."""
    path = server.root / name
    path.mkdir()
    path.chmod(0o777)
    return path
