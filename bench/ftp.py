"""The FTP legs: S3 (moto) to vsftpd, plain FTP, Conveyor's transfer-ftp
against ``rclone copy`` with its FTP backend, one large file and many small
ones (docs/transfer-ftp.md, "Measured").

vsftpd is the server partners run most and the strictest here: no MLSD, no
server hash, so Conveyor checks what it streamed (``sha256:stream``, or the
size with ``CONVEYOR_VERIFY=false``) and rclone compares sizes only. The
server is the test fixture's (``tests/ftp_servers.py``: anonymous login with
uploads allowed, a passive port range), started once per run and stopped by
pid; each leg writes to a directory of its own, removed after it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import boto3

from bench import legs
from bench.legs import Bench, Figures, SmallFilesSettings, client_id
from bench.pipeline import Pipeline, parse_time
from bench.rclone import RCLONE
from bench.sources import put_objects, small_keys
from tests import ftp_servers
from tests.ftp_servers import FtpTestServer, start_ftp_server, stop_ftp_server, writable_directory

FTP_SECRET = "bench/ftp"  # a secret's name, not a value
#: vsftpd's passive port range for the run. vsftpd tries a few random ports of
#: its range for each data connection and ends the session (``500 OOPS:
#: priv_sock_get_int``) when none is free: the fixture's 10 ports run out under
#: the small files' 8 sessions.
PASSIVE_PORTS = 64


@contextlib.contextmanager
def running_vsftpd(wanted: bool) -> Iterator[FtpTestServer | None]:
    """vsftpd on free 127.0.0.1 ports when the run measures FTP; stopped on exit."""
    if not wanted:
        yield None
        return
    with mock.patch.object(ftp_servers, "PASSIVE_PORTS", PASSIVE_PORTS):
        server = start_ftp_server("vsftpd")
    try:
        yield server
    finally:
        stop_ftp_server(server)


def rclone_remote(server: FtpTestServer) -> list[str]:
    """rclone's ``[ftp]`` remote for ``server``; rclone takes the password only
    obscured (``rclone obscure``), even an anonymous login's empty one."""
    obscured = subprocess.run(
        [RCLONE, "obscure", server.password], capture_output=True, text=True, check=True
    ).stdout.strip()
    return [
        "[ftp]",
        "type = ftp",
        "host = 127.0.0.1",
        f"port = {server.port}",
        f"user = {server.username}",
        f"pass = {obscured}",
        "",
    ]


def _destination(server: FtpTestServer, directory: str, **settings: Any) -> Figures:
    return {
        "type": "ftp",
        "host": "127.0.0.1",
        "port": server.port,
        "tls": "none",
        "username": server.username,
        "directory": directory,
        "credentials": {"secret": FTP_SECRET},
        **settings,
    }


def add_routes(
    pipeline: Pipeline, server: FtpTestServer, rounds: int, small: SmallFilesSettings
) -> None:
    """The FTP routes (one per workload and round) and their secret, before the scanner starts."""
    boto3.Session().client("secretsmanager").create_secret(
        Name=FTP_SECRET, SecretString=json.dumps({"password": server.password})
    )
    for workload in ("ftp_verified", "ftp_unverified"):
        for number in range(rounds):
            pipeline.add_route(
                client_id(workload, number), _destination(server, f"conveyor-{workload}")
            )
    pipeline.add_route(
        client_id("ftp_small", 0),
        _destination(server, "conveyor-ftp_small", max_sessions=small.sessions),
    )


def _fresh_directory(server: FtpTestServer, name: str) -> None:
    shutil.rmtree(server.root / name, ignore_errors=True)
    writable_directory(server, name)


def _check_files(server: FtpTestServer, directory: str, sizes: dict[str, int]) -> None:
    held = {p.name: p.stat().st_size for p in (server.root / directory).iterdir()}
    if held != sizes:
        wrong = {name: held.get(name) for name in sizes if held.get(name) != sizes[name]}
        raise RuntimeError(f"{directory} on vsftpd: {len(held)} file(s), wrong or missing {wrong}")


def _server(bench: Bench) -> FtpTestServer:
    if bench.vsftpd is None:
        raise RuntimeError("the FTP legs need vsftpd (run with --only including ftp)")
    return bench.vsftpd


def conveyor_large(bench: Bench, *, verified: bool, round_number: int) -> Figures:
    """The large file through the pipeline to vsftpd, a fresh transfer-ftp per leg."""
    server = _server(bench)
    workload = "ftp_verified" if verified else "ftp_unverified"
    directory = f"conveyor-{workload}"
    _fresh_directory(server, directory)
    figures = legs.conveyor_large(
        bench, workload, round_number, kind="ftp", CONVEYOR_VERIFY=str(verified).lower()
    )
    _check_files(server, directory, {bench.sources.large_key: bench.sources.large_size})
    shutil.rmtree(server.root / directory, ignore_errors=True)
    return figures


def rclone_large(bench: Bench, *, round_number: int) -> Figures:
    server = _server(bench)
    target = f"rclone-ftp-{round_number}"
    _fresh_directory(server, target)
    figures = legs.rclone_large(bench, f"ftp:{target}", log_name=target)
    _check_files(server, target, {bench.sources.large_key: bench.sources.large_size})
    shutil.rmtree(server.root / target, ignore_errors=True)
    return figures


def rclone_small(bench: Bench) -> Figures:
    server, sources = _server(bench), bench.sources
    target = "rclone-ftp-small"
    _fresh_directory(server, target)
    figures = legs._rclone(
        bench, f"s3:{sources.bucket}/{sources.small_prefix}", f"ftp:{target}", log_name=target
    )
    count = len(list((server.root / target).iterdir()))
    shutil.rmtree(server.root / target, ignore_errors=True)
    if count != len(sources.small_files):
        raise RuntimeError(f"rclone delivered {count} of {len(sources.small_files)} files")
    return {"files_per_s": round(count / figures["seconds"], 1), "files": count, **figures}


def conveyor_small(bench: Bench) -> Figures:
    """The small files uploaded into the pick-up, verified by the stream; timed from
    the first upload to the last ``deliveredAt`` in the ledger (emptied first)."""
    server, pipeline, sources = _server(bench), bench.pipeline, bench.sources
    directory = "conveyor-ftp_small"
    _fresh_directory(server, directory)
    client = client_id("ftp_small", 0)
    keys = small_keys(f"{client}/", len(sources.small_files))
    pipeline.clear_ledger()
    service_env = {"CONVEYOR_CONCURRENCY": str(bench.small.concurrency)}
    with legs.transfer_service(bench, "ftp", "ftp_small", **service_env) as (service, watch, cpu):
        first_upload = time.time()
        put_objects(
            bench.s3, pipeline.pickup_bucket, list(zip(keys, sources.small_files, strict=True))
        )
        for _ in keys:
            service.wait_for(
                lambda e: e.get("event") == "transfer.delivered", 600, "ftp_small deliveries"
            )
    entries = [e for e in pipeline.ledger(client) if e["status"] == "success"]
    if len(entries) != len(keys):
        raise RuntimeError(f"{len(entries)} of {len(keys)} files are success in the ledger")
    _check_files(
        server,
        directory,
        {
            key.rsplit("/", 1)[-1]: len(body)
            for key, body in zip(keys, sources.small_files, strict=True)
        },
    )
    shutil.rmtree(server.root / directory, ignore_errors=True)
    seconds = max(parse_time(e["deliveredAt"]) for e in entries) - first_upload
    worker = legs._worker(watch, cpu)
    return {
        "files_per_s": round(len(keys) / seconds, 1),
        "files": len(keys),
        "seconds": round(seconds, 2),
        **worker,
        "cpu_ms_per_file": legs._per_file_ms(worker["cpu_seconds_by_process"], len(keys)),
        "verified": sorted({str(e.get("verifiedBy")) for e in entries}),
        "jobs": len({e["jobId"] for e in entries}),
    }
