"""Each measurement: one tool moving one workload between the same two endpoints.

Every function returns flat figures (numbers, flags, lists) for the report.
Conveyor's large-file legs run a fresh transfer-service process per leg, so
its peak RSS is that leg's, and time the worker from ``transfer.started`` to
``transfer.delivered`` (claimed file to settled ``success``: HEAD of the
source, SSH/HTTP connection, the copy, the verification, the ledger write).
rclone and ``sftp`` are timed from start to exit.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from bench.measure import (
    MB,
    CpuMeter,
    ProcessWatch,
    RequestCount,
    Usage,
    run_command,
    socket_reads_counted,
)
from bench.pipeline import Pipeline, Service, parse_time
from bench.profile import Recording, recording, top_functions
from bench.rclone import Rclone
from bench.requests import RequestLog
from bench.sources import Sources, assemble_into, copy_into, purge, put_objects, small_keys
from bench.standins import StandIns

if TYPE_CHECKING:
    from tests.ftp_servers import FtpTestServer

Figures = dict[str, Any]

#: One client per workload and round: routes are fixed when the scanner starts.
CLIENT_PREFIX = {
    "sftp_verified": "B1",
    "sftp_unverified": "B2",
    "gcs": "B3",
    "s3": "B4",
    "small_verified": "B5",
    "small_unverified": "B6",
    "rss_large": "B7",
    "latency": "B8",
    "ftp_verified": "C1",
    "ftp_unverified": "C2",
    "ftp_small": "C3",
}

TRANSFER_SERVICE = {
    "sftp": "conveyor_transfer_sftp",
    "gcs": "conveyor_transfer_gcs",
    "s3": "conveyor_transfer_s3",
    "ftp": "conveyor_transfer_ftp",
}


def client_id(workload: str, round_number: int) -> str:
    return f"{CLIENT_PREFIX[workload]}{round_number:03d}"


@dataclass
class SmallFilesSettings:
    """How the pipeline is tuned for many small files (see docs/benchmarks.md)."""

    #: Messages transfer-sftp handles at once (``CONVEYOR_CONCURRENCY``).
    concurrency: int
    #: SSH connections to the server (the route's ``max_sessions``).
    sessions: int


@dataclass
class Bench:
    stand_ins: StandIns
    pipeline: Pipeline
    sources: Sources
    rclone: Rclone
    small: SmallFilesSettings
    #: moto's request log, when the run counts AWS requests per file.
    requests: RequestLog | None = None
    #: Where ``py-spy`` recordings go, when the run profiles the services.
    profiles: Path | None = None
    #: The FTP server of the FTP legs (``bench.ftp``), when the run measures them.
    vsftpd: FtpTestServer | None = None

    @property
    def s3(self) -> Any:
        return self.pipeline.s3

    def cpu_meter(self) -> CpuMeter:
        """CPU of the stand-ins and the scanner during a leg."""
        pids = {"moto": self.stand_ins.moto.process.pid, "sshd": self.stand_ins.sshd.process.pid}
        if self.stand_ins.gcs is not None:
            pids["gcs_emulator"] = self.stand_ins.gcs.process.pid
        return CpuMeter({**pids, "scanner": self.pipeline.scanner_pid})

    def wait_for_sshd_sessions(self) -> None:
        """Until sshd has reaped its sessions, so their CPU time is counted."""
        listener = psutil.Process(self.stand_ins.sshd.process.pid)
        deadline = time.monotonic() + 5
        while listener.children() and time.monotonic() < deadline:
            time.sleep(0.05)

    def sftp_dir(self, name: str) -> str:
        """An absolute directory on the SFTP server (rclone's ``md5sum`` runs in a
        shell, which does not start where SFTP sessions do)."""
        return str(self.stand_ins.sftp_path(name))


def _rate(size: int, seconds: float) -> float:
    return round(size / seconds / MB, 1)


def _usage(usage: Usage) -> Figures:
    return {
        "seconds": round(usage.seconds, 2),
        "peak_rss_mb": usage.peak_rss_mb,
        "cpu_seconds": round(usage.cpu_seconds, 2),
    }


def remove_sftp_dir(bench: Bench, name: str) -> None:
    shutil.rmtree(bench.stand_ins.sftp_path(name), ignore_errors=True)


def _check_file(bench: Bench, relative: str, size: int) -> None:
    held = bench.stand_ins.sftp_path(relative).stat().st_size
    if held != size:
        raise RuntimeError(f"{relative} holds {held} bytes, expected {size}")


# -- routes ----------------------------------------------------------------------------


def add_routes(pipeline: Pipeline, workloads: Mapping[str, int], small: SmallFilesSettings) -> None:
    """One route per workload and round, added before the scanner starts."""
    for workload, rounds in workloads.items():
        for number in range(rounds):
            pipeline.add_route(client_id(workload, number), _destination(pipeline, workload, small))


def gcs_bucket(pipeline: Pipeline) -> str:
    return f"{pipeline.stack}-gcs"


def s3_bucket(pipeline: Pipeline) -> str:
    return f"{pipeline.stack}-dest"


def _destination(pipeline: Pipeline, workload: str, small: SmallFilesSettings) -> Figures:
    if workload == "gcs":
        # chunk_mib stays at its default (32): what production runs.
        return {"type": "gcs", "bucket": gcs_bucket(pipeline), "prefix": "conveyor/"}
    if workload == "s3":
        return {"type": "s3", "bucket": s3_bucket(pipeline), "prefix": "conveyor/"}
    settings: Figures = {"verify_checksum": not workload.endswith("unverified")}
    if workload.startswith("small") or workload == "latency":
        settings["max_sessions"] = small.sessions
    return pipeline.sftp_destination(f"conveyor-{workload}", **settings)


# -- the raw limit ---------------------------------------------------------------------


def raw_sftp(bench: Bench, round_number: int) -> Figures:
    """OpenSSH's ``sftp`` putting the local copy of the large file: the endpoint's limit."""
    sshd = bench.stand_ins.sshd
    target = f"raw-{round_number}"
    bench.stand_ins.sftp_path(target).mkdir(parents=True, exist_ok=True)
    argv = [
        "sftp",
        "-q",
        "-F",
        "/dev/null",
        "-b",
        "-",
        "-P",
        str(sshd.port),
        "-i",
        str(sshd.client_key_path),
        "-o",
        f"UserKnownHostsFile={bench.stand_ins.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        f"{sshd.username}@127.0.0.1",
    ]
    local = bench.sources.large_local
    with bench.cpu_meter() as cpu:
        usage = run_command(
            argv,
            stdin=f"put {local} {target}/{local.name}\n",
            log=bench.pipeline.state / "logs" / f"raw-sftp-{round_number}.log",
        )
        bench.wait_for_sshd_sessions()
    _check_file(bench, f"{target}/{local.name}", bench.sources.large_size)
    remove_sftp_dir(bench, target)
    return {
        "mb_per_s": _rate(bench.sources.large_size, usage.seconds),
        **_usage(usage),
        "cpu_seconds_by_process": {"sftp": round(usage.cpu_seconds, 2), **cpu.seconds},
    }


# -- rclone ----------------------------------------------------------------------------


def _rclone(bench: Bench, source: str, destination: str, *flags: str, log_name: str) -> Figures:
    with bench.cpu_meter() as cpu:
        usage = bench.rclone.copy(source, destination, *flags, log_name=log_name)
        bench.wait_for_sshd_sessions()
    return {
        **_usage(usage),
        "cpu_seconds_by_process": {"rclone": round(usage.cpu_seconds, 2), **cpu.seconds},
    }


def rclone_large(bench: Bench, destination: str, *flags: str, log_name: str) -> Figures:
    sources = bench.sources
    source = f"s3:{sources.bucket}/{sources.large_key}"
    figures = _rclone(bench, source, destination, *flags, log_name=log_name)
    return {"mb_per_s": _rate(sources.large_size, figures["seconds"]), **figures}


def rclone_sftp(bench: Bench, *, verified: bool, round_number: int) -> Figures:
    target = f"rclone-{'verified' if verified else 'unverified'}-{round_number}"
    flags = () if verified else ("--sftp-disable-hashcheck",)
    figures = rclone_large(bench, f"sftp:{bench.sftp_dir(target)}", *flags, log_name=target)
    _check_file(bench, f"{target}/{bench.sources.large_key}", bench.sources.large_size)
    remove_sftp_dir(bench, target)
    return figures


def rclone_small(bench: Bench, *, verified: bool) -> Figures:
    sources = bench.sources
    target = f"rclone-small-{'verified' if verified else 'unverified'}"
    flags = () if verified else ("--sftp-disable-hashcheck",)
    figures = _rclone(
        bench,
        f"s3:{sources.bucket}/{sources.small_prefix}",
        f"sftp:{bench.sftp_dir(target)}",
        *flags,
        log_name=target,
    )
    count = len(list(bench.stand_ins.sftp_path(target).iterdir()))
    if count != len(sources.small_files):
        raise RuntimeError(f"rclone delivered {count} of {len(sources.small_files)} files")
    remove_sftp_dir(bench, target)
    return {"files_per_s": round(count / figures["seconds"], 1), "files": count, **figures}


# -- Conveyor --------------------------------------------------------------------------


def _delivered(service: Service, key: str) -> tuple[Figures, Figures]:
    """The ``transfer.started`` and ``transfer.delivered`` events of ``key``."""
    file_name = key.rsplit("/", 1)[-1]
    delivered = service.wait_for(
        lambda e: e.get("event") == "transfer.delivered" and e.get("file") == file_name,
        1800,
        f"delivery of {key}",
    )
    started = next(
        e
        for e in service.events
        if e.get("event") == "transfer.started" and e.get("job_id") == delivered["job_id"]
    )
    return started, delivered


@contextlib.contextmanager
def transfer_service(
    bench: Bench, kind: str, log_name: str, **service_env: str
) -> Iterator[tuple[Service, ProcessWatch, CpuMeter]]:
    """A fresh transfer service for one leg, watched until it has stopped and sshd
    has reaped its sessions."""
    service = bench.pipeline.start(TRANSFER_SERVICE[kind], log_name, **service_env)
    with bench.cpu_meter() as cpu:
        try:
            with ProcessWatch(service.process.pid) as watch:
                yield service, watch, cpu
        finally:
            service.stop()
            bench.wait_for_sshd_sessions()


def _worker(watch: ProcessWatch, cpu: CpuMeter) -> Figures:
    assert watch.usage is not None
    return {
        "peak_rss_mb": watch.usage.peak_rss_mb,
        "cpu_seconds": round(watch.usage.cpu_seconds, 2),
        "cpu_seconds_by_process": {"worker": round(watch.usage.cpu_seconds, 2), **cpu.seconds},
        "worker_read_mb": round(watch.usage.read_bytes / MB, 2),
        "worker_written_mb": round(watch.usage.written_bytes / MB, 2),
    }


def conveyor_large(
    bench: Bench,
    workload: str,
    round_number: int,
    *,
    kind: str,
    size_copies: int = 1,
    **service_env: str,
) -> Figures:
    """One large file through the pipeline, with a fresh ``kind`` transfer service."""
    pipeline = bench.pipeline
    client = client_id(workload, round_number)
    name = (
        bench.sources.large_key if size_copies == 1 else f"{size_copies}x{bench.sources.large_key}"
    )
    key = f"{client}/{name}"
    with transfer_service(bench, kind, f"{workload}-{round_number}", **service_env) as (
        service,
        watch,
        cpu,
    ):
        # Putting the file into the pick-up costs moto seconds of CPU (it copies and
        # hashes the object); the event that starts the delivery follows it.
        if size_copies == 1:
            copy_into(bench.s3, bench.sources, pipeline.pickup_bucket, key)
        else:
            assemble_into(bench.s3, bench.sources, pipeline.pickup_bucket, key, size_copies)
        cpu.restart()
        started, delivered = _delivered(service, key)
    entry = next(e for e in pipeline.ledger(client) if e["sourceKey"] == key)
    if entry["status"] != "success":
        raise RuntimeError(f"{key} is {entry['status']} in the ledger: {entry.get('lastError')}")
    purge(bench.s3, pipeline.pickup_bucket, key)
    size = int(delivered["bytes"])
    seconds = parse_time(delivered["timestamp"]) - parse_time(started["timestamp"])
    return {
        "mb_per_s": _rate(size, seconds),
        "seconds": round(seconds, 2),
        "copy_seconds": delivered["seconds"],
        "bytes": size,
        **_worker(watch, cpu),
        "server_side": delivered["server_side"],
        "verified": delivered["verified"],
        "delivered_to": delivered["to"],
    }


def conveyor_sftp(bench: Bench, *, verified: bool, round_number: int) -> Figures:
    workload = "sftp_verified" if verified else "sftp_unverified"
    figures = conveyor_large(
        bench, workload, round_number, kind="sftp", CONVEYOR_VERIFY=str(verified).lower()
    )
    directory = f"conveyor-{workload}"
    _check_file(bench, f"{directory}/{bench.sources.large_key}", bench.sources.large_size)
    remove_sftp_dir(bench, directory)
    return figures


@contextlib.contextmanager
def _profiled(bench: Bench, service: Service, workload: str) -> Iterator[list[Recording]]:
    """py-spy on the scanner and the worker while the block runs, if the run profiles."""
    with contextlib.ExitStack() as stack:
        found: list[Recording] = []
        if bench.profiles is not None:
            for name, pid in (
                ("worker", service.process.pid),
                ("scanner", bench.pipeline.scanner_pid),
            ):
                output = bench.profiles / f"{workload}-{name}.txt"
                found.append(stack.enter_context(recording(name, pid, output)))
        yield found


def _per_file_ms(seconds: Mapping[str, float], files: int) -> Figures:
    return {name: round(cpu * 1000 / files, 1) for name, cpu in seconds.items()}


def conveyor_small(bench: Bench, *, verified: bool) -> Figures:
    """The small files uploaded into the pick-up; timed from the first upload to
    the last ``deliveredAt`` in the ledger. The ledger tables are emptied first.
    With a request log, the leg then runs on until only empty long polls come
    (pick-up deletes and job finishes included) and counts the requests."""
    pipeline, sources = bench.pipeline, bench.sources
    workload = "small_verified" if verified else "small_unverified"
    client = client_id(workload, 0)
    keys = small_keys(f"{client}/", len(sources.small_files))
    service_env = {
        "CONVEYOR_CONCURRENCY": str(bench.small.concurrency),
        "CONVEYOR_VERIFY": str(verified).lower(),
    }
    pipeline.clear_ledger()
    log = bench.requests
    first = log.wait_until_quiet(log.offset(), 120) if log is not None else 0
    with (
        RequestCount(bench.stand_ins.moto.process.log_path) as moto,
        transfer_service(bench, "sftp", workload, **service_env) as (service, watch, cpu),
        _profiled(bench, service, workload) as recordings,
    ):
        first_upload = time.time()
        put_objects(
            bench.s3, pipeline.pickup_bucket, list(zip(keys, sources.small_files, strict=True))
        )
        uploaded = time.time()
        for _ in keys:
            service.wait_for(
                lambda e: e.get("event") == "transfer.delivered", 600, f"{workload} deliveries"
            )
        last = log.wait_until_quiet(first, 300) if log is not None else 0
    entries = [e for e in pipeline.ledger(client) if e["status"] == "success"]
    if len(entries) != len(keys):
        raise RuntimeError(f"{len(entries)} of {len(keys)} files are success in the ledger")
    delivered = max(parse_time(e["deliveredAt"]) for e in entries)
    seconds = delivered - first_upload
    remove_sftp_dir(bench, f"conveyor-{workload}")
    worker = _worker(watch, cpu)
    figures: Figures = {
        "files_per_s": round(len(keys) / seconds, 1),
        "files": len(keys),
        "seconds": round(seconds, 2),
        "upload_seconds": round(uploaded - first_upload, 2),
        **worker,
        "cpu_ms_per_file": _per_file_ms(worker["cpu_seconds_by_process"], len(keys)),
        "moto_requests_per_file": round(moto.requests / len(keys), 1),
        "jobs": len({e["jobId"] for e in entries}),
    }
    if log is not None:
        summary = log.summary(pipeline, first, last, len(keys), time.time() - first_upload)
        figures["aws_requests_per_file"] = summary["totals"]["requests_per_file"]
        figures["aws_usd_per_10000_files"] = summary["totals"]["usd_per_10000_files"]
        figures["aws_requests"] = summary
    if recordings:
        figures["profiled"] = True
        per_file = figures["cpu_ms_per_file"]
        figures["profile"] = {r.name: top_functions(r.stacks, per_file[r.name]) for r in recordings}
    return figures


def conveyor_copy_only(bench: Bench, *, verified: bool) -> Figures:
    """The small files through ``copy()`` alone (``bench.copy_worker``), without
    the queue and the ledger: the transfer path's own share of the pipeline."""
    sources, sshd = bench.sources, bench.stand_ins.sshd
    target = f"copy-only-{'verified' if verified else 'unverified'}"
    result = bench.pipeline.state / f"{target}.json"
    argv = [
        sys.executable,
        "-m",
        "bench.copy_worker",
        f"--bucket={sources.bucket}",
        f"--prefix={sources.small_prefix}",
        f"--port={sshd.port}",
        f"--user={sshd.username}",
        f"--host-key={sshd.host_key}",
        f"--key-file={sshd.client_key_path}",
        f"--directory={target}",
        f"--concurrency={bench.small.concurrency}",
        f"--sessions={bench.small.sessions}",
        f"--result={result}",
        *(["--verify"] if verified else []),
    ]
    with bench.cpu_meter() as cpu:
        usage = run_command(
            argv, env=bench.pipeline.env(), log=bench.pipeline.state / "logs" / f"{target}.log"
        )
        bench.wait_for_sshd_sessions()
    copied = json.loads(result.read_text())
    if copied["files"] != len(sources.small_files):
        raise RuntimeError(f"copied {copied['files']} of {len(sources.small_files)} files")
    remove_sftp_dir(bench, target)
    return {
        "files_per_s": round(copied["files"] / copied["seconds"], 1),
        "files": copied["files"],
        "seconds": round(copied["seconds"], 2),
        "peak_rss_mb": usage.peak_rss_mb,
        "cpu_seconds": round(usage.cpu_seconds, 2),
        "cpu_seconds_by_process": {"worker": round(usage.cpu_seconds, 2), **cpu.seconds},
    }


def conveyor_gcs(bench: Bench) -> Figures:
    figures = conveyor_large(bench, "gcs", 0, kind="gcs")
    bench.stand_ins.delete_gcs_object(
        gcs_bucket(bench.pipeline), f"conveyor/{bench.sources.large_key}"
    )
    return figures


#: What stops rclone 1.60 here, found by reading its log and google-api-go-client.
RCLONE_GCS_EMULATOR = (
    "rclone cannot upload a file larger than one chunk to gcp-storage-emulator: "
    "google-api-go-client sends 'X-GUploader-No-308: yes' with each chunk and rejects "
    "the raw '308 Resume Incomplete' the emulator answers ('unexpected 308 response "
    "status code'); real GCS honours the header"
)


def rclone_gcs(bench: Bench) -> Figures:
    bucket = gcs_bucket(bench.pipeline)
    try:
        figures = rclone_large(bench, f"gcs:{bucket}/rclone", log_name="rclone-gcs")
    except RuntimeError as exc:
        if "unexpected 308 response status code" in str(exc):
            raise RuntimeError(RCLONE_GCS_EMULATOR) from None
        raise
    bench.stand_ins.delete_gcs_object(bucket, f"rclone/{bench.sources.large_key}")
    return figures


def conveyor_s3(bench: Bench, *, round_number: int) -> Figures:
    """S3 to S3 with the service's own credentials: a server-side copy. The
    worker's ``read_chars``/``write_chars`` show what passed through it."""
    figures = conveyor_large(bench, "s3", round_number, kind="s3")
    moved = (figures["worker_read_mb"] + figures["worker_written_mb"]) * MB
    if socket_reads_counted():
        figures["payload_through_worker"] = moved >= bench.sources.large_size / 100
    else:
        figures["payload_through_worker"] = None
        figures["payload_not_measured"] = "this kernel's rchar does not count socket reads"
    bench.s3.delete_object(
        Bucket=s3_bucket(bench.pipeline), Key=f"conveyor/{bench.sources.large_key}"
    )
    return figures


def rclone_s3(bench: Bench, *, round_number: int) -> Figures:
    """rclone copies an object made just before, as Conveyor's leg copies the one the
    harness has just put into the pick-up: moto copies a fresh object more slowly
    (it must grow its memory) than one it has held for a while."""
    sources, bucket = bench.sources, s3_bucket(bench.pipeline)
    fresh = f"s3-leg-{round_number}/{sources.large_key}"
    copy_into(bench.s3, sources, sources.bucket, fresh)
    figures = _rclone(
        bench,
        f"s3:{sources.bucket}/{fresh}",
        f"s3:{bucket}/rclone",
        log_name=f"rclone-s3-{round_number}",
    )
    purge(bench.s3, sources.bucket, fresh)
    bench.s3.delete_object(Bucket=bucket, Key=f"rclone/{sources.large_key}")
    return {"mb_per_s": _rate(sources.large_size, figures["seconds"]), **figures}


def conveyor_rss_large(bench: Bench, copies: int) -> Figures:
    """A file ``copies`` times the large source (assembled in the pick-up by
    ``UploadPartCopy``), through transfer-sftp with verification: its peak RSS."""
    figures = conveyor_large(bench, "rss_large", 0, kind="sftp", size_copies=copies)
    remove_sftp_dir(bench, "conveyor-rss_large")
    return figures
