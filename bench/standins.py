"""The stand-ins the benchmark measures against, each on a free 127.0.0.1 port,
started through ``conveyor_cli.localstack.servers`` and stopped by pid."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

from conveyor_cli.localstack import servers
from conveyor_cli.localstack.processes import ManagedProcess


@dataclass
class StandIns:
    state: Path
    moto: servers.Moto
    sshd: servers.Sshd
    gcs: servers.GcsEmulator | None

    @property
    def known_hosts(self) -> Path:
        """A known_hosts file pinning sshd's host key, for rclone and ``sftp``."""
        path = self.state / "known_hosts"
        if not path.exists():
            path.write_text(f"[127.0.0.1]:{self.sshd.port} {self.sshd.host_key}\n")
        return path

    def sftp_path(self, relative: str) -> Path:
        """Where a path relative to the SFTP session's start lands on this machine."""
        return self.sshd.root / relative

    def create_gcs_bucket(self, name: str) -> None:
        assert self.gcs is not None
        httpx.post(
            f"{self.gcs.host}/storage/v1/b", params={"project": "bench"}, json={"name": name}
        ).raise_for_status()

    def delete_gcs_object(self, bucket: str, name: str) -> None:
        """Free the emulator's memory; a failure here only costs memory."""
        assert self.gcs is not None
        with contextlib.suppress(httpx.HTTPError):
            httpx.delete(
                f"{self.gcs.host}/storage/v1/b/{bucket}/o/{quote(name, safe='')}", timeout=120
            )


@contextlib.contextmanager
def running_stand_ins(
    state: Path, *, gcs: bool, request_log: Path | None = None
) -> Iterator[StandIns]:
    """moto, sshd and (with ``gcs``) the GCS emulator; every one stopped on exit.

    Points this process's AWS clients at moto (``AWS_ENDPOINT_URL``), as the
    services' own environment does. With ``request_log``, moto writes one JSON
    line per request there (``CONVEYOR_MOTO_REQUEST_LOG``: caller, operation...).
    """
    started: list[ManagedProcess] = []
    if request_log is not None:
        os.environ["CONVEYOR_MOTO_REQUEST_LOG"] = str(request_log)
    try:
        moto = servers.start_moto(state)
        started.append(moto.process)
        sshd = servers.start_sshd(state)
        started.append(sshd.process)
        emulator = servers.start_gcs(state) if gcs else None
        if emulator is not None:
            started.append(emulator.process)
        os.environ.update(moto.env)
        os.environ.pop("AWS_CA_BUNDLE", None)
        yield StandIns(state, moto, sshd, emulator)
    finally:
        for process in reversed(started):
            process.stop(grace=10)
