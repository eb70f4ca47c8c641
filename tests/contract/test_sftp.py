"""SFTP (OpenSSH's sshd) passes the destination contract, with and without
the ``posix-rename@openssh.com`` extension, plus what only SFTP has: the
temporary name, host key pinning, remote checksums, directory creation."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import psutil
import pytest

from conveyor_cli.localstack import servers
from conveyor_shared.backends.sftp import (
    RemoteDirectoryMissing,
    SftpConnectionPool,
    SftpServer,
    SftpStore,
    temporary_name,
)
from conveyor_shared.errors import Misconfigured, NotFound, PermanentError, TransientError
from conveyor_shared.secrets import SftpCredentials
from tests.contract.suite import DestinationContract, MiB, write
from tests.support import eventually


class SftpPeer:
    """Reads the directory straight from the sshd's file system."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    async def read(self, path: str) -> bytes:
        try:
            return (self._directory / path).read_bytes()
        except FileNotFoundError:
            raise NotFound(path) from None

    async def names(self) -> list[str]:
        return sorted(
            str(p.relative_to(self._directory)) for p in self._directory.rglob("*") if p.is_file()
        )


def key_credentials(server: servers.Sshd) -> SftpCredentials:
    return SftpCredentials.model_validate({"private_key": server.private_key})


def pool_for(
    server: servers.Sshd,
    *,
    host_key: str | None = None,
    credentials: SftpCredentials | None = None,
    max_sessions: int = 4,
    port: int | None = None,
) -> SftpConnectionPool:
    async def fetch() -> SftpCredentials:
        return credentials or key_credentials(server)

    return SftpConnectionPool(
        SftpServer(
            "127.0.0.1", port or server.port, server.username, (host_key or server.host_key,)
        ),
        fetch,
        max_sessions,
    )


@pytest.fixture(scope="module")
def sshd_without_posix_rename(state_dir: Path) -> Iterator[servers.Sshd]:
    server = servers.start_sshd(
        state_dir, name="sshd-no-posix-rename", sftp_flags=("-P", "posix-rename")
    )
    yield server
    server.process.stop()


@pytest.fixture(scope="module")
def sshd_sftp_only(state_dir: Path) -> Iterator[servers.Sshd]:
    server = servers.start_sshd(state_dir, name="sshd-sftp-only", sftp_only=True)
    yield server
    server.process.stop()


@pytest.fixture
def server(sshd: servers.Sshd) -> servers.Sshd:
    return sshd


@pytest.fixture
def directory(server: servers.Sshd, unique: str) -> Path:
    path = server.root / f"contract-{unique}"
    path.mkdir()
    return path


@pytest.fixture
async def pool(server: servers.Sshd) -> AsyncIterator[SftpConnectionPool]:
    pool = pool_for(server)
    yield pool
    await pool.close()


@pytest.fixture
def destination(pool: SftpConnectionPool, directory: Path) -> SftpStore:
    return SftpStore(pool, directory.name)


@pytest.fixture
def peer(directory: Path) -> SftpPeer:
    return SftpPeer(directory)


class TestSftpContract(DestinationContract):
    async def test_temporary_name_is_fixed_length_and_reused(
        self, destination: SftpStore, directory: Path, peer: SftpPeer
    ) -> None:
        name = "é" * 127 + "x"  # 255 bytes: the longest name most file systems allow
        assert temporary_name(name) == temporary_name(name)
        assert len(temporary_name(name)) == len(temporary_name("a.csv"))
        left = b"left behind by a dropped connection"
        first = await destination.begin(name, None)
        await first.write(left)
        temp = directory / temporary_name(name)

        async def written() -> bool:
            return temp.exists() and temp.stat().st_size == len(left)

        await eventually(written, timeout=10, what="the first try's bytes on the server")
        await first.abort()
        assert await peer.names() == []
        # What a dropped connection leaves (abort could not remove it) ...
        await asyncio.to_thread(temp.write_bytes, left)
        # ... is truncated and reused by the retry, then renamed.
        await write(destination, name, b"complete")
        assert await peer.names() == [name]
        assert await peer.read(name) == b"complete"

    async def test_remote_md5_is_compared(self, destination: SftpStore) -> None:
        data = os.urandom(MiB + 3)
        await write(destination, "sum.bin", data)
        assert await destination.remote_hash("sum.bin", "md5") == hashlib.md5(data).hexdigest()  # noqa: S324
        assert (
            await destination.remote_hash("sum.bin", "sha256") == hashlib.sha256(data).hexdigest()
        )
        assert await destination.remote_hash("sum.bin", "crc32c") is None
        with pytest.raises(NotFound):
            await destination.remote_hash("missing.bin", "md5")

    async def test_missing_directory_is_a_clear_permanent_error(
        self, pool: SftpConnectionPool
    ) -> None:
        store = SftpStore(pool, "no-such-directory-here")
        with pytest.raises(RemoteDirectoryMissing) as raised:
            await store.begin("file.csv", 1)
        assert isinstance(raised.value, PermanentError)
        assert "no-such-directory-here" in str(raised.value)
        assert "create_directory" in str(raised.value)

    async def test_create_directory_makes_missing_parents(
        self, pool: SftpConnectionPool, directory: Path
    ) -> None:
        store = SftpStore(pool, f"{directory.name}/in/bound", create_directory=True)
        await write(store, "2026/11/report.csv", b"made")
        assert (directory / "in/bound/2026/11/report.csv").read_bytes() == b"made"

    @pytest.mark.parametrize("path", ["../escape.csv", "/etc/escape.csv", "a//b.csv", ""])
    async def test_paths_leaving_the_directory_are_refused(
        self, destination: SftpStore, path: str
    ) -> None:
        with pytest.raises(PermanentError, match="refusing"):
            await destination.begin(path, 1)

    async def test_describe_names_user_host_port_and_path(
        self, destination: SftpStore, directory: Path, server: servers.Sshd
    ) -> None:
        assert destination.describe("a b.csv") == (
            f"sftp://{server.username}@127.0.0.1:{server.port}/{directory.name}/a b.csv"
        )

    async def test_memory_stays_bounded_by_the_request_window(
        self, destination: SftpStore, peer: SftpPeer
    ) -> None:
        chunk = os.urandom(MiB)
        process = psutil.Process()
        before = process.memory_info().rss
        upload = await destination.begin("big.bin", 256 * MiB)
        peak = before
        for _ in range(256):
            await upload.write(chunk)
            peak = max(peak, process.memory_info().rss)
        info = await upload.commit()
        assert info.size == 256 * MiB
        # 32 requests of 255 KiB in flight, plus asyncssh's copies of them (measured: ~22 MiB).
        assert peak - before < 64 * MiB, f"RSS grew by {(peak - before) / MiB:.0f} MiB"
        assert await peer.names() == ["big.bin"]


class TestSftpContractWithoutPosixRename(TestSftpContract):
    """The fallback rename (remove, then rename) against a server that lacks the extension."""

    @pytest.fixture
    def server(self, sshd_without_posix_rename: servers.Sshd) -> servers.Sshd:
        return sshd_without_posix_rename


class TestSftpConnections:
    async def test_unpinned_host_key_is_permanent_and_names_the_server(
        self, sshd: servers.Sshd, unique: str
    ) -> None:
        other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
        pool = pool_for(sshd, host_key=other.strip())
        try:
            with pytest.raises(PermanentError, match=f"127.0.0.1:{sshd.port}"):
                await SftpStore(pool).stat("anything")
        finally:
            await pool.close()

    async def test_refused_key_is_permanent(self, sshd: servers.Sshd) -> None:
        stranger = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
        pool = pool_for(sshd, credentials=SftpCredentials.model_validate({"private_key": stranger}))
        try:
            with pytest.raises(PermanentError, match="refused the credentials") as raised:
                await SftpStore(pool).stat("anything")
            assert stranger not in str(raised.value)
        finally:
            await pool.close()

    async def test_unreadable_private_key_is_misconfigured_without_echoing_it(
        self, sshd: servers.Sshd
    ) -> None:
        junk = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-key\n-----END OPENSSH PRIVATE KEY-----"
        pool = pool_for(sshd, credentials=SftpCredentials.model_validate({"private_key": junk}))
        try:
            with pytest.raises(Misconfigured) as raised:
                await SftpStore(pool).stat("anything")
            assert "not-a-key" not in str(raised.value)
        finally:
            await pool.close()

    async def test_passphrase_protected_key(self, sshd: servers.Sshd) -> None:
        key = asyncssh.import_private_key(sshd.private_key)
        # PKCS#8: asyncssh needs the optional bcrypt package for OpenSSH-format encryption.
        locked = key.export_private_key("pkcs8-pem", passphrase="open sesame").decode()
        right = SftpCredentials.model_validate({"private_key": locked, "passphrase": "open sesame"})
        wrong = SftpCredentials.model_validate({"private_key": locked, "passphrase": "guess"})
        pool = pool_for(sshd, credentials=right)
        try:
            with pytest.raises(NotFound):  # connected and authenticated: the file is just missing
                await SftpStore(pool).stat("no-such-file")
        finally:
            await pool.close()
        pool = pool_for(sshd, credentials=wrong)
        try:
            with pytest.raises(Misconfigured, match="passphrase") as raised:
                await SftpStore(pool).stat("no-such-file")
            assert "guess" not in str(raised.value)
        finally:
            await pool.close()

    async def test_bad_pinned_key_is_misconfigured(self, sshd: servers.Sshd) -> None:
        with pytest.raises(Misconfigured, match="host_keys entry 1"):
            pool_for(sshd, host_key="ssh-ed25519 bm90LWEta2V5")

    async def test_unreachable_server_is_transient(self, sshd: servers.Sshd) -> None:
        pool = pool_for(sshd, port=servers.free_port())
        with pytest.raises(TransientError):
            await SftpStore(pool).stat("anything")

    async def test_sessions_are_reused_and_limited(self, sshd: servers.Sshd, unique: str) -> None:
        (sshd.root / f"limit-{unique}").mkdir()
        pool = pool_for(sshd, max_sessions=2)
        store = SftpStore(pool, f"limit-{unique}")
        try:
            first = await store.begin("a.csv", None)
            second = await store.begin("b.csv", None)
            third = asyncio.ensure_future(store.begin("c.csv", None))
            for _ in range(10):  # let it run up to where it waits for a session
                await asyncio.sleep(0)
            assert not third.done(), "a third upload must wait for one of two sessions"
            await first.commit()
            await (await third).commit()
            await second.commit()
            connections = {id(s.conn) for s in pool._idle}
            assert len(connections) == 2
        finally:
            await pool.close()

    async def test_dropped_connection_is_replaced(self, sshd: servers.Sshd, unique: str) -> None:
        (sshd.root / f"drop-{unique}").mkdir()
        pool = pool_for(sshd, max_sessions=1)
        store = SftpStore(pool, f"drop-{unique}")
        try:
            await write(store, "one.csv", b"1")
            dropped = pool._idle[0].conn
            dropped.abort()
            await asyncio.wait_for(dropped.wait_closed(), 10)
            await write(store, "two.csv", b"2")
            assert (sshd.root / f"drop-{unique}" / "two.csv").read_bytes() == b"2"
        finally:
            await pool.close()

    async def test_checksum_is_none_when_the_server_runs_no_commands(
        self, sshd_sftp_only: servers.Sshd, unique: str
    ) -> None:
        (sshd_sftp_only.root / f"only-{unique}").mkdir()
        pool = pool_for(sshd_sftp_only)
        store = SftpStore(pool, f"only-{unique}")
        try:
            await write(store, "f.csv", b"data")
            assert await store.remote_hash("f.csv", "md5") is None
            assert "sftp.checksum_unavailable" in pool.noted
        finally:
            await pool.close()
