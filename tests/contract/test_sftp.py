"""SFTP (OpenSSH's sshd) passes the destination contract, with and without
the ``posix-rename@openssh.com`` extension, plus what only SFTP has: unique
temporary names and the sweep of orphaned ones, the checksum taken on the
temporary file before the rename, host key pinning, the session limit,
directory creation; and the source contract, over the same pool and
``md5sum``."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import psutil
import pytest

from conveyor_cli.localstack import servers
from conveyor_shared.backends.s3 import S3Store
from conveyor_shared.backends.sftp import (
    RemoteDirectoryMissing,
    SftpConnectionPool,
    SftpServer,
    SftpStore,
    SftpUpload,
    is_temporary_name,
    temporary_name,
)
from conveyor_shared.errors import (
    IntegrityError,
    Misconfigured,
    NotFound,
    PermanentError,
    TransientError,
)
from conveyor_shared.secrets import SftpCredentials
from conveyor_shared.transfer import AssuredHashUnavailable, copy
from tests.contract.source_suite import DroppingProxy, SourceContract
from tests.contract.suite import DestinationContract, MiB, write
from tests.support import TcpProxy, eventually


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324 - what md5sum prints


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


async def on_server(upload: SftpUpload, directory: Path, size: int) -> Path:
    """The upload's temporary file once the server holds ``size`` bytes of it."""
    temp = directory / Path(upload.temporary_path).name

    async def written() -> bool:
        return temp.exists() and temp.stat().st_size == size

    await eventually(written, timeout=10, what="the upload's bytes on the server")
    return temp


def age(path: Path, seconds: float) -> None:
    """Make ``path`` look untouched for ``seconds``."""
    old = path.stat().st_mtime - seconds
    os.utime(path, (old, old))


class TestSftpContract(DestinationContract):
    async def test_temporary_names_are_fixed_length_and_unique(
        self, destination: SftpStore, directory: Path, peer: SftpPeer
    ) -> None:
        name = "é" * 127 + "x"  # 255 bytes: the longest name most file systems allow
        assert temporary_name(name) != temporary_name(name)
        assert len(temporary_name(name)) == len(temporary_name("a.csv"))
        assert is_temporary_name(temporary_name(name))
        first = await destination.begin(name, None)
        second = await destination.begin(name, None)
        try:
            assert first.temporary_path != second.temporary_path
            await first.write(b"one")
            await second.write(b"two")
            await on_server(first, directory, 3)
            await on_server(second, directory, 3)
        finally:
            await first.abort()
            await second.abort()
        assert await peer.names() == []

    async def test_concurrent_uploads_of_one_path_never_mix(
        self, server: servers.Sshd, destination: SftpStore, directory: Path, peer: SftpPeer
    ) -> None:
        """Two replicas (two pools) write different bytes to one path at once."""
        other_pool = pool_for(server)
        replica = SftpStore(other_pool, directory.name)
        ours, theirs = os.urandom(4 * MiB), os.urandom(4 * MiB)
        try:
            uploads = [
                await destination.begin("same.bin", None),
                await replica.begin("same.bin", None),
            ]
            for start in range(0, 4 * MiB, 256 * 1024):  # interleaved, block by block
                for upload, data in zip(uploads, (ours, theirs), strict=True):
                    await upload.write(data[start : start + 256 * 1024])
            committed = await asyncio.gather(
                uploads[0].commit({"md5": md5(ours)}), uploads[1].commit({"md5": md5(theirs)})
            )
        finally:
            await other_pool.close()
        assert [info.size for info in committed] == [4 * MiB, 4 * MiB]
        assert await peer.read("same.bin") in (ours, theirs), "a mix of both uploads"
        assert await peer.names() == ["same.bin"]

    async def test_old_orphans_are_swept_and_live_uploads_left(
        self, destination: SftpStore, directory: Path, peer: SftpPeer
    ) -> None:
        crashed = directory / temporary_name("report.csv")
        older_version = directory / ".conveyor-0123456789abcdef.part"
        someone_elses = directory / ".report.csv.part"
        for path in (crashed, older_version, someone_elses):
            path.write_bytes(b"left by a crash")
            age(path, 2 * 3600)
        live = await destination.begin("other.csv", None)
        await live.write(b"still being written")
        live_temp = await on_server(live, directory, 19)
        try:
            await write(destination, "report.csv", b"fresh")
            assert live_temp.exists(), "a live upload's temporary file is left alone"
        finally:
            await live.abort()
        assert not crashed.exists()
        assert not older_version.exists()
        assert someone_elses.exists(), "only Conveyor's temporary names are swept"
        assert sorted(await peer.names()) == [".report.csv.part", "report.csv"]

    async def test_checksum_is_taken_on_the_temporary_file_before_rename(
        self, destination: SftpStore, directory: Path, peer: SftpPeer
    ) -> None:
        data = os.urandom(MiB + 3)
        upload = await destination.begin("sum.bin", len(data))
        assert upload.assured_hashes == {"md5"}, "md5sum ran on the new, empty file"
        await upload.write(data)
        temp = await on_server(upload, directory, len(data))
        # The server's copy goes bad between the last write and the commit.
        with temp.open("r+b") as damaged:
            damaged.write(bytes([data[0] ^ 1]))
        with pytest.raises(IntegrityError, match="md5 mismatch before rename"):
            await upload.commit({"md5": md5(data)})
        await upload.abort()
        assert await peer.names() == [], "nothing under the final name, the temporary removed"
        info = await write(destination, "sum.bin", data, expected={"md5": md5(data)})
        assert info.hashes == {"md5": md5(data)}

    async def test_copy_hashes_nothing_locally_where_the_server_runs_md5sum(
        self, destination: SftpStore, peer: SftpPeer, source_bucket: S3Store
    ) -> None:
        data = os.urandom(2 * MiB + 1)
        await source_bucket.client.put_object(Bucket=source_bucket.bucket, Key="f.bin", Body=data)
        info = await source_bucket.stat("f.bin")
        result = await copy(source_bucket, info, destination, "f.bin")
        assert result.verified == ("md5:destination",), "the ETag against md5sum, no md5:stream"
        assert await peer.read("f.bin") == data

    async def test_remote_hash(self, destination: SftpStore) -> None:
        data = os.urandom(MiB + 3)
        await write(destination, "sum.bin", data)
        assert await destination.remote_hash("sum.bin", "md5") == md5(data)
        assert (
            await destination.remote_hash("sum.bin", "sha256") == hashlib.sha256(data).hexdigest()
        )
        assert await destination.remote_hash("sum.bin", "crc32c") is None
        with pytest.raises(NotFound):
            await destination.remote_hash("missing.bin", "md5")

    async def test_abort_after_a_dropped_connection_removes_the_temporary_file(
        self, destination: SftpStore, directory: Path, peer: SftpPeer
    ) -> None:
        upload = await destination.begin("dropped.bin", None)
        await upload.write(b"left behind by a dropped connection")
        await on_server(upload, directory, 35)
        session = upload._session
        assert session is not None
        session.conn.abort()
        await asyncio.wait_for(session.conn.wait_closed(), 10)
        await upload.abort()
        assert await peer.names() == [], "removed over a fresh connection"

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

    async def test_sessions_are_limited_and_reused(self, sshd: servers.Sshd, unique: str) -> None:
        (sshd.root / f"limit-{unique}").mkdir()
        proxy = CountingProxy(sshd.port)
        async with proxy:
            pool = pool_for(sshd, max_sessions=2, port=proxy.port)
            store = SftpStore(pool, f"limit-{unique}")
            try:
                await asyncio.gather(*(write(store, f"{n}.bin", os.urandom(MiB)) for n in range(6)))
                assert proxy.most == 2, f"{proxy.most} connections were open at once, not 2"
                assert proxy.connections == 2, "six files over the same two connections"
            finally:
                await pool.close()
        assert len(list((sshd.root / f"limit-{unique}").iterdir())) == 6

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
            upload = await store.begin("f.csv", 4)
            assert upload.assured_hashes == frozenset()
            await upload.write(b"data")
            info = await upload.commit({"md5": md5(b"data")})
            assert info.hashes == {}, "no md5sum, so no hash reported"
            assert "sftp.checksum_unavailable" in pool.noted
            assert not pool.checksums_worth_asking(), "later uploads do not ask again"
            assert await store.remote_hash("f.csv", "md5") is None
        finally:
            await pool.close()

    async def test_without_commands_copy_checks_the_stream(
        self, sshd_sftp_only: servers.Sshd, unique: str, source_bucket: S3Store
    ) -> None:
        directory = sshd_sftp_only.root / f"only-{unique}"
        directory.mkdir()
        pool = pool_for(sshd_sftp_only)
        store = SftpStore(pool, directory.name)
        data = os.urandom(2 * MiB + 1)
        await source_bucket.client.put_object(Bucket=source_bucket.bucket, Key="f.bin", Body=data)
        info = await source_bucket.stat("f.bin")
        try:
            result = await copy(source_bucket, info, store, "f.bin")
            assert result.verified_by == "md5:stream", "the bytes read matched the S3 ETag"
            assert (directory / "f.bin").read_bytes() == data
        finally:
            await pool.close()

    async def test_a_broken_assurance_shows_nothing_and_copy_streams_again(
        self, sshd_sftp_only: servers.Sshd, unique: str, source_bucket: S3Store
    ) -> None:
        """The server ran ``md5sum`` before (so MD5 was assured) and no longer does."""
        directory = sshd_sftp_only.root / f"only-{unique}"
        directory.mkdir()
        pool = pool_for(sshd_sftp_only)
        store = SftpStore(pool, directory.name)
        data = os.urandom(MiB + 7)
        await source_bucket.client.put_object(Bucket=source_bucket.bucket, Key="f.bin", Body=data)
        info = await source_bucket.stat("f.bin")
        try:
            pool.checksum_outcome(True)
            with pytest.raises(AssuredHashUnavailable):
                await write(store, "f.bin", data, expected={"md5": md5(data)})
            assert list(directory.iterdir()) == [], "nothing visible, the temporary removed"
            pool.checksum_outcome(True)
            result = await copy(source_bucket, info, store, "f.bin")
            assert result.verified_by == "md5:stream", "streamed again, hashing what it read"
            assert [p.name for p in directory.iterdir()] == ["f.bin"]
            assert (directory / "f.bin").read_bytes() == data
        finally:
            await pool.close()


@dataclass
class SftpSourceUnderTest:
    source: SftpStore
    directory: Path
    cut: Callable[[], Awaitable[None]] | None
    #: What ``md5sum`` on the server vouches for.
    hashes: frozenset[str] = frozenset({"md5"})

    async def put(self, path: str, data: bytes) -> None:
        target = self.directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


class TestSftpSource(SourceContract):
    @pytest.fixture
    async def source_under_test(
        self, server: servers.Sshd, directory: Path
    ) -> AsyncIterator[SftpSourceUnderTest]:
        """A store in a fresh directory, reached through a proxy to the sshd."""
        proxy = DroppingProxy(server.port)
        async with proxy:
            pool = pool_for(server, port=proxy.port)
            try:
                yield SftpSourceUnderTest(SftpStore(pool, directory.name), directory, proxy.drop)
            finally:
                await pool.close()

    async def test_uploads_in_progress_are_not_listed(
        self, source_under_test: SftpSourceUnderTest
    ) -> None:
        await source_under_test.put(f"in/{temporary_name('a.csv')}", b"partial")
        await source_under_test.put("in/a.csv", b"whole")
        assert [info.path async for info in source_under_test.source.list()] == ["in/a.csv"]

    async def test_without_commands_stat_vouches_for_no_hash(
        self, sshd_sftp_only: servers.Sshd, unique: str
    ) -> None:
        directory = sshd_sftp_only.root / f"only-{unique}"
        directory.mkdir()
        (directory / "f.csv").write_bytes(b"data")
        pool = pool_for(sshd_sftp_only)
        try:
            info = await SftpStore(pool, directory.name).stat("f.csv")
        finally:
            await pool.close()
        assert (info.size, info.hashes) == (4, {})


class CountingProxy(TcpProxy):
    """A TCP proxy that also counts the connections open through it at once."""

    def __init__(self, upstream: int) -> None:
        super().__init__(upstream)
        self.open = 0
        self.most = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.most = max(self.most, self.open)
        try:
            await super()._accept(reader, writer)
        finally:
            self.open -= 1
