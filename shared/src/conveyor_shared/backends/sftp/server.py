"""Where an SFTP server is and how transfers to it are tuned."""

from __future__ import annotations

from dataclasses import dataclass

#: OpenSSH's sftp-server refuses (and drops the connection on) bigger writes.
MAX_BLOCK = 255 * 1024


@dataclass(frozen=True)
class SftpTuning:
    """How SFTP transfers are run; the defaults are what docs/transfer-sftp.md measured."""

    block_size: int = MAX_BLOCK
    #: 8 MiB of writes outstanding: four times OpenSSH's 2 MiB channel window.
    #: More costs memory (about 0.65 MiB per request) and gained nothing measurable.
    requests_in_flight: int = 32
    #: Preferred first: AES-GCM is the fastest cipher asyncssh offers on x86.
    encryption_algs: tuple[str, ...] = (
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        "chacha20-poly1305@openssh.com",
        "aes128-ctr",
        "aes192-ctr",
        "aes256-ctr",
    )
    connect_timeout: float = 30.0
    #: A silent connection is declared dead after interval * count_max seconds.
    keepalive_interval: float = 15.0
    keepalive_count_max: int = 4
    #: Pooled connections idle longer than this are closed rather than reused.
    idle_seconds: float = 300.0
    #: Upper bound on abort()'s clean-up of a temporary file.
    cleanup_timeout: float = 10.0
    #: A remote checksum may take this long plus one second per ``checksum_rate`` bytes.
    checksum_timeout: float = 60.0
    checksum_rate: int = 25_000_000
    #: After a server refused ``md5sum``, uploads hash locally and ask it again after this long.
    checksum_retry_seconds: float = 3600.0
    #: A temporary file not written for this long is a crashed worker's and is removed.
    orphan_age: float = 3600.0

    def __post_init__(self) -> None:
        if not 0 < self.block_size <= MAX_BLOCK:
            raise ValueError(f"block_size must be between 1 and {MAX_BLOCK}")
        if self.requests_in_flight < 1:
            raise ValueError("requests_in_flight must be at least 1")


@dataclass(frozen=True)
class SftpServer:
    """Where to connect and as whom; ``host_keys`` are the pinned public keys."""

    host: str
    port: int
    username: str
    host_keys: tuple[str, ...]

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"sftp://{self.username}@{self.address}"
