"""The FTP backend against four real servers (pyftpdlib, vsftpd, proftpd,
pure-ftpd) and FTPS on vsftpd (explicit and implicit, session reuse
required) and proftpd (explicit, session reuse required): the destination
and source contracts unchanged, plus what only FTP has."""

from __future__ import annotations

import asyncio
import contextlib
import ftplib
import hashlib
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from conveyor_cli.localstack.processes import free_port
from conveyor_shared.backends.ftp import (
    FtpSettings,
    FtpStore,
    RemoteDirectoryMissing,
    open_ftp_store,
)
from conveyor_shared.backends.ftp.settings import UploadMode
from conveyor_shared.backends.ftp.upload import FtpUpload
from conveyor_shared.backends.s3 import S3Store
from conveyor_shared.backends.temporary import temporary_name
from conveyor_shared.errors import (
    CredentialsRefused,
    IntegrityError,
    NotFound,
    PermanentError,
    TransientError,
)
from conveyor_shared.transfer import copy
from tests.contract.source_suite import DroppingProxy, SourceContract, listed
from tests.contract.suite import DestinationContract, MiB, write
from tests.ftp_servers import (
    FtpServers,
    FtpTestServer,
    Kind,
    Tls,
    drop_sessions,
    files_under,
    writable_directory,
)

#: Proxies listen here, on the same port numbers as the server's passive
#: ports (which the server binds on 127.0.0.1): a data connection to the
#: EPSV port on the control host then passes through the proxy of that port.
PROXY_HOST = "127.0.0.2"


class LoopbackProxy(DroppingProxy):
    """A proxy listening on ``PROXY_HOST``, which ``drop`` cuts."""

    def __init__(self, upstream: int, *, port: int = 0, cut_after: int | None = None) -> None:
        super().__init__(upstream)
        self.port = port
        self.cut_after = cut_after

    async def __aenter__(self) -> LoopbackProxy:
        self._server = await asyncio.start_server(self._accept, PROXY_HOST, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self


@contextlib.asynccontextmanager
async def front_of(
    server: FtpTestServer, *, cut_data_after: int | None = None
) -> AsyncIterator[tuple[LoopbackProxy, list[LoopbackProxy]]]:
    """A proxy for the control port and one per passive port; the first data
    connection through any of them is cut after ``cut_data_after`` bytes."""
    low, high = server.passive_ports
    async with contextlib.AsyncExitStack() as stack:
        control = await stack.enter_async_context(LoopbackProxy(server.port))
        links = [
            await stack.enter_async_context(
                LoopbackProxy(port, port=port, cut_after=cut_data_after)
            )
            for port in range(low, high + 1)
        ]
        yield control, links


async def send(upload: FtpUpload, data: bytes, at_half: Callable[[], None] | None = None) -> None:
    """Write ``data`` in 1 MiB chunks and commit, calling ``at_half`` half-way."""
    for start in range(0, len(data), MiB):
        if at_half is not None and start == len(data) // 2:
            at_half()
        await upload.write(data[start : start + MiB])
    await upload.commit()


@contextlib.asynccontextmanager
async def opened(settings: FtpSettings, credentials: dict[str, str]) -> AsyncIterator[FtpStore]:
    store = await open_ftp_store(settings, credentials)
    try:
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def proxied(
    server: FtpTestServer, directory: str, *, cut_data_after: int | None = None, **overrides: Any
) -> AsyncIterator[tuple[FtpStore, LoopbackProxy, list[LoopbackProxy]]]:
    """A store reaching ``server`` through ``front_of``'s proxies."""
    async with front_of(server, cut_data_after=cut_data_after) as (control, links):
        settings = settings_for(server, directory, host=PROXY_HOST, port=control.port, **overrides)
        async with opened(settings, credentials_for(server)) as store:
            yield store, control, links


class FtpPeer:
    """Reads the directory straight from the FTP server's file system."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    async def read(self, path: str) -> bytes:
        try:
            return (self._directory / path).read_bytes()
        except FileNotFoundError:
            raise NotFound(path) from None

    async def names(self) -> list[str]:
        return files_under(self._directory)


def settings_for(server: FtpTestServer, directory: str, **overrides: Any) -> FtpSettings:
    return FtpSettings.model_validate(
        {
            "host": "127.0.0.1",
            "port": server.port,
            "tls": server.tls,
            "directory": directory,
            "io_timeout": 20,
            "connect_timeout": 10,
            **overrides,
        }
    )


def credentials_for(server: FtpTestServer) -> dict[str, str]:
    found = server.credentials
    if server.certificate:
        found["ca_bundle"] = server.certificate
    return found


class FtpCase:
    """Which server a test class runs against, and how its routes are set."""

    KIND: ClassVar[Kind] = "pyftpdlib"
    TLS: ClassVar[Tls] = "none"
    UPLOAD_MODE: ClassVar[UploadMode] = "rename"

    @pytest.fixture
    def server(self, ftp_servers: FtpServers) -> FtpTestServer:
        return ftp_servers.get(self.KIND, self.TLS)

    @pytest.fixture
    def directory(self, server: FtpTestServer, unique: str) -> Path:
        return writable_directory(server, f"contract-{unique}")

    @pytest.fixture
    async def destination(self, server: FtpTestServer, directory: Path) -> AsyncIterator[FtpStore]:
        settings = settings_for(server, directory.name, upload_mode=self.UPLOAD_MODE)
        async with opened(settings, credentials_for(server)) as store:
            yield store

    @pytest.fixture
    def peer(self, directory: Path) -> FtpPeer:
        return FtpPeer(directory)


@dataclass
class FtpSourceUnderTest:
    source: FtpStore
    directory: Path
    cut: Callable[[], Awaitable[None]] | None
    hashes: frozenset[str] = frozenset()

    async def put(self, path: str, data: bytes) -> None:
        target = self.directory / path
        for parent in reversed(target.relative_to(self.directory).parents):
            (self.directory / parent).mkdir(exist_ok=True)
            (self.directory / parent).chmod(0o777)
        target.write_bytes(data)


class FtpContract(FtpCase, DestinationContract, SourceContract):
    @pytest.fixture
    async def source_under_test(
        self, server: FtpTestServer, directory: Path
    ) -> AsyncIterator[FtpSourceUnderTest]:
        """The store reaches the server through proxies, so ``cut`` drops its
        control and data connections at once, as a network failure would."""
        async with proxied(server, directory.name) as (store, control, data_links):

            async def cut() -> None:
                for proxy in (control, *data_links):
                    await proxy.drop()

            yield FtpSourceUnderTest(store, directory, cut)

    async def test_upload_cut_at_half_leaves_nothing_and_the_retry_arrives(
        self, server: FtpTestServer, directory: Path, peer: FtpPeer
    ) -> None:
        """Through proxies on the control port and every passive port, the
        data connection carrying the upload is cut once half the file passed."""
        data = os.urandom(16 * MiB)
        half = len(data) // 2
        async with proxied(
            server, directory.name, cut_data_after=half, upload_mode=self.UPLOAD_MODE
        ) as (store, _, data_links):
            upload = await store.begin("cut.bin", len(data))
            with pytest.raises(TransientError):
                await send(upload, data)
            await upload.abort()  # as copy() does after a failure
            assert any(link.cut for link in data_links), "the proxy cut the upload"
            assert "cut.bin" not in await peer.names()
            for link in data_links:
                link.cut_after = None
            await write(store, "cut.bin", data)
        assert await peer.read("cut.bin") == data
        assert await peer.names() == ["cut.bin"], "the cut upload's temporary file was removed"

    async def test_old_orphans_are_swept_and_live_uploads_left(
        self, destination: FtpStore, directory: Path, peer: FtpPeer
    ) -> None:
        crashed = directory / temporary_name("report.csv")
        someone_elses = directory / ".report.csv.part"
        for path in (crashed, someone_elses):
            path.write_bytes(b"left by a crash")
            aged = path.stat().st_mtime - 2 * 3600
            os.utime(path, (aged, aged))
        live = await destination.begin("other.csv", None)
        try:
            await live.write(b"still being written")
            await write(destination, "report.csv", b"fresh")
            live_temp = directory / Path(live.temporary_path).name
            assert live_temp.exists(), "a live upload's temporary file is left alone"
            assert not crashed.exists(), "the crashed upload's temporary file was swept"
        finally:
            await live.abort()
        assert sorted(await peer.names()) == [".report.csv.part", "report.csv"]

    async def test_listing_keeps_dotfiles_spaces_and_time_precision(
        self, destination: FtpStore, directory: Path
    ) -> None:
        (directory / ".profile").write_bytes(b"dot")
        (directory / "a b.csv").write_bytes(b"ab")
        found = {info.path: info async for info in destination.list()}
        assert sorted(found) == [".profile", "a b.csv"]
        assert found["a b.csv"].size == 2
        stat = await destination.stat("a b.csv")
        assert stat.modified_precision is None, "MDTM is exact to the second"
        listed = found["a b.csv"]
        assert listed.modified is not None
        assert stat.modified is not None
        slack = listed.modified_precision or timedelta(0)
        assert listed.modified <= stat.modified <= listed.modified + slack + timedelta(seconds=1)

    async def test_missing_directory_is_a_clear_permanent_error(
        self, server: FtpTestServer
    ) -> None:
        async with opened(
            settings_for(server, "no-such-directory-here"), credentials_for(server)
        ) as store:
            with pytest.raises(RemoteDirectoryMissing, match="create_dirs") as raised:
                await store.begin("file.csv", 1)
            assert isinstance(raised.value, PermanentError)

    async def test_create_dirs_makes_missing_parents(
        self, server: FtpTestServer, directory: Path
    ) -> None:
        async with opened(
            settings_for(server, directory.name, create_dirs=True, upload_mode=self.UPLOAD_MODE),
            credentials_for(server),
        ) as store:
            await write(store, "2026/11/report.csv", b"made")
        assert (directory / "2026/11/report.csv").read_bytes() == b"made"

    async def test_sessions_are_limited_and_shared(
        self, server: FtpTestServer, directory: Path
    ) -> None:
        """Five uploads and five listings at once over two control connections."""
        async with proxied(
            server, directory.name, max_sessions=2, upload_mode=self.UPLOAD_MODE
        ) as (store, control, _):
            await asyncio.gather(
                *(write(store, f"{n}.bin", os.urandom(MiB)) for n in range(5)),
                *(listed(store) for _ in range(5)),
            )
        assert control.connections == 2, f"{control.connections} control connections, not 2"
        assert len(files_under(directory)) == 5

    @pytest.mark.parametrize("path", ["../escape.csv", "/etc/escape.csv", "a//b.csv", ""])
    async def test_paths_leaving_the_directory_are_refused(
        self, destination: FtpStore, path: str
    ) -> None:
        with pytest.raises(PermanentError, match="refusing"):
            await destination.begin(path, 1)


class ServerEndsSessions:
    """For servers with a process per session, which a test can end mid-upload
    (pyftpdlib serves every session in one process: nothing to end there)."""

    async def test_upload_dropped_by_the_server_leaves_nothing_and_the_retry_arrives(
        self, server: FtpTestServer, destination: FtpStore, peer: FtpPeer
    ) -> None:
        data = os.urandom(16 * MiB)
        upload = await destination.begin("cut.bin", len(data))
        with pytest.raises(TransientError):
            await send(upload, data, at_half=lambda: drop_sessions(server))
        await upload.abort()
        with pytest.raises(NotFound):
            await peer.read("cut.bin")
        await write(destination, "cut.bin", data)
        assert await peer.read("cut.bin") == data
        assert await peer.names() == ["cut.bin"]


class TestPyftpdlib(FtpContract):
    KIND = "pyftpdlib"


class TestVsftpd(ServerEndsSessions, FtpContract):
    KIND = "vsftpd"


class TestProftpd(ServerEndsSessions, FtpContract):
    """proftpd refuses to rename over an existing file unless ``AllowOverwrite on``."""

    KIND = "proftpd"
    UPLOAD_MODE = "delete_then_rename"


class TestPureFtpd(ServerEndsSessions, FtpContract):
    KIND = "pure-ftpd"


class TestVsftpdExplicitFtps(ServerEndsSessions, FtpContract):
    KIND = "vsftpd"
    TLS = "explicit"


class TestVsftpdImplicitFtps(ServerEndsSessions, FtpContract):
    KIND = "vsftpd"
    TLS = "implicit"


class TestProftpdExplicitFtps(ServerEndsSessions, FtpContract):
    KIND = "proftpd"
    TLS = "explicit"
    UPLOAD_MODE = "delete_then_rename"


class TestPureFtpdExplicitFtps(ServerEndsSessions, FtpContract):
    """pure-ftpd does not require session reuse (nor resume it, measured)."""

    KIND = "pure-ftpd"
    TLS = "explicit"


class TestFtpBehaviour(FtpCase):
    async def test_server_hash_is_compared_before_the_rename(
        self, ftp_servers: FtpServers, unique: str
    ) -> None:
        """proftpd with mod_digest offers HASH, XMD5, XSHA256 and XCRC."""
        server = ftp_servers.get("proftpd")
        directory = writable_directory(server, f"hash-{unique}")
        data = os.urandom(MiB + 5)
        md5 = hashlib.md5(data).hexdigest()  # noqa: S324 - what the server computes
        sha256 = hashlib.sha256(data).hexdigest()
        async with opened(
            settings_for(server, directory.name, upload_mode="delete_then_rename"),
            credentials_for(server),
        ) as store:
            with pytest.raises(IntegrityError, match="md5 mismatch"):
                await write(store, "h.bin", data, expected={"md5": "0" * 32})
            assert files_under(directory) == [], "nothing under the final name, temporary removed"
            assert store.features.native_hashes == {"md5"}
            info = await write(store, "h.bin", data, expected={"md5": md5})
            assert info.hashes == {"md5": md5}
            info = await write(store, "h.bin", data, expected={"sha256": sha256})
            assert info.hashes == {"sha256": sha256}, "OPTS HASH SHA-256, then HASH"
        assert (directory / "h.bin").read_bytes() == data

    async def test_copy_from_s3_is_checked_by_the_servers_md5(
        self, ftp_servers: FtpServers, unique: str, source_bucket: S3Store
    ) -> None:
        server = ftp_servers.get("proftpd")
        directory = writable_directory(server, f"copy-{unique}")
        data = os.urandom(2 * MiB + 1)
        await source_bucket.client.put_object(Bucket=source_bucket.bucket, Key="f.bin", Body=data)
        async with opened(
            settings_for(server, directory.name, upload_mode="delete_then_rename"),
            credentials_for(server),
        ) as store:
            result = await copy(source_bucket, await source_bucket.stat("f.bin"), store, "f.bin")
        assert "md5:destination" in result.verified
        assert (directory / "f.bin").read_bytes() == data

    async def test_vsftpd_refuses_data_connections_that_do_not_resume_the_session(
        self, ftp_servers: FtpServers
    ) -> None:
        """Python's ftplib does not resume TLS sessions: vsftpd refuses it,
        while the store (above, every FTPS contract test) is let through."""
        server = ftp_servers.get("vsftpd", "explicit")
        assert server.certificate is not None

        def list_with_ftplib() -> None:
            context = ssl.create_default_context(cadata=server.certificate)
            with ftplib.FTP_TLS(context=context, timeout=10) as client:  # noqa: S321
                client.connect("127.0.0.1", server.port)
                client.login(server.username, server.password)
                client.prot_p()
                client.retrlines("LIST")

        with pytest.raises(ftplib.error_perm, match="522"):
            await asyncio.to_thread(list_with_ftplib)

    async def test_proftpd_refuses_rename_over_a_file_and_says_which_mode_works(
        self, ftp_servers: FtpServers, unique: str
    ) -> None:
        server = ftp_servers.get("proftpd")
        directory = writable_directory(server, f"refuse-{unique}")
        async with opened(settings_for(server, directory.name), credentials_for(server)) as store:
            await write(store, "same.csv", b"first")
            with pytest.raises(PermanentError, match="delete_then_rename"):
                await write(store, "same.csv", b"second")
        assert (directory / "same.csv").read_bytes() == b"first"

    async def test_direct_mode_writes_the_final_name(
        self, ftp_servers: FtpServers, unique: str
    ) -> None:
        server = ftp_servers.get("pure-ftpd")
        directory = writable_directory(server, f"direct-{unique}")
        async with opened(
            settings_for(server, directory.name, upload_mode="direct"), credentials_for(server)
        ) as store:
            upload = await store.begin("d.csv", 3)
            assert upload.temporary_path.endswith("/d.csv")
            await upload.write(b"abc")
            await upload.commit()
        assert files_under(directory) == ["d.csv"]

    async def test_wrong_password_is_refused_without_echoing_it(
        self, ftp_servers: FtpServers
    ) -> None:
        server = ftp_servers.get("proftpd")
        async with opened(
            settings_for(server, "."), {"username": server.username, "password": "guess-wrong"}
        ) as store:
            with pytest.raises(CredentialsRefused, match="530") as raised:
                await store.stat("anything")
            assert "guess-wrong" not in str(raised.value)

    async def test_untrusted_certificate_is_permanent(self, ftp_servers: FtpServers) -> None:
        server = ftp_servers.get("vsftpd", "explicit")
        async with opened(settings_for(server, "."), server.credentials) as store:
            with pytest.raises(PermanentError, match="not trusted"):
                await store.stat("anything")

    async def test_pinned_fingerprint(self, ftp_servers: FtpServers, unique: str) -> None:
        server = ftp_servers.get("proftpd", "explicit")
        assert server.certificate is not None
        der = ssl.PEM_cert_to_DER_cert(server.certificate)
        right = hashlib.sha256(der).hexdigest()
        directory = writable_directory(server, f"pinned-{unique}")
        async with opened(
            settings_for(
                server, directory.name, fingerprint=right, upload_mode="delete_then_rename"
            ),
            server.credentials,
        ) as store:
            await write(store, "pinned.csv", b"ok")
        async with opened(
            settings_for(server, ".", fingerprint="0" * 64), server.credentials
        ) as wrong:
            with pytest.raises(PermanentError, match="fingerprint"):
                await wrong.stat("anything")

    @pytest.mark.parametrize("trust", [False, True])
    async def test_pasv_address_is_ignored_unless_trusted(
        self, ftp_servers: FtpServers, unique: str, trust: bool
    ) -> None:
        """vsftpd's PASV reply names 127.0.0.1; the store reaches it at 127.0.0.2,
        where the proxies are: by default the data goes to the control host."""
        server = ftp_servers.get("vsftpd")
        directory = writable_directory(server, f"pasv-{unique}")
        async with proxied(server, directory.name, passive="pasv", trust_pasv_address=trust) as (
            store,
            _,
            data_links,
        ):
            await write(store, "p.csv", b"passive")
        through_proxies = sum(link.connections for link in data_links)
        # The upload's STOR and the listing of the directory's sweep.
        assert through_proxies == (0 if trust else 2)
        assert (directory / "p.csv").read_bytes() == b"passive"

    async def test_unreachable_server_is_transient(self, ftp_servers: FtpServers) -> None:
        settings = FtpSettings(host="127.0.0.1", port=free_port(), tls="none", connect_timeout=5)
        async with opened(settings, {"username": "u", "password": "p"}) as store:
            with pytest.raises(TransientError):
                await store.stat("anything")
