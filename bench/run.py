"""The whole benchmark, in one go: stand-ins, sources, stack, every leg, the report."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench import ftp, legs
from bench.latency import conveyor_latency
from bench.legs import Bench, Figures, SmallFilesSettings
from bench.options import Options
from bench.pipeline import Pipeline
from bench.profile import profile_text
from bench.rclone import Rclone, rclone_version
from bench.report import Results, combine, ratios, table, targets
from bench.requests import RequestLog
from bench.sources import create_sources
from bench.standins import running_stand_ins


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _openssh_version() -> str:
    result = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
    return (result.stderr or result.stdout).strip()


def machine() -> dict[str, object]:
    versions = {
        name: importlib.metadata.version(name)
        for name in ("moto", "asyncssh", "aioboto3", "gcp-storage-emulator")
    }
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "rclone": rclone_version(),
        "openssh": _openssh_version(),
        **versions,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _measure(name: str, leg: Callable[[], Figures]) -> Figures:
    say(f"  {name} ...")
    try:
        figures = leg()
    except Exception as exc:
        figures = {"error": f"{type(exc).__name__}: {exc}"}
    # The request rows and profiles are long: the JSON and the closing tables hold them.
    brief = {k: v for k, v in figures.items() if k not in {"aws_requests", "profile"}}
    say(f"  {name}: {brief}")
    return figures


Leg = Callable[..., Figures]


def _pairs_round(
    group: str, bench: Bench, number: int, pairs: list[tuple[str, Leg, Leg]]
) -> dict[str, Figures]:
    """One round of rclone-against-Conveyor pairs; odd rounds run Conveyor first."""
    found: dict[str, Figures] = {}
    for label, rclone, conveyor in pairs:
        pair = [(f"rclone{label}", rclone), (f"conveyor{label}", conveyor)]
        for name, leg in reversed(pair) if number % 2 else pair:
            found[name] = _measure(f"{group} {name}", partial(leg, bench, round_number=number))
    return found


def _median_rounds(measured: list[dict[str, Figures]]) -> dict[str, Figures]:
    """Every leg's median over the rounds (or its first failure, if one failed)."""
    combined: dict[str, Figures] = {}
    for name in measured[0]:
        runs = [m[name] for m in measured]
        failed = next((r for r in runs if "error" in r), None)
        combined[name] = failed if failed is not None else combine(runs)
    return combined


def _sftp(bench: Bench, rounds: int) -> dict[str, Figures]:
    pairs: list[tuple[str, Leg, Leg]] = [
        (
            "_verified",
            partial(legs.rclone_sftp, verified=True),
            partial(legs.conveyor_sftp, verified=True),
        ),
        (
            "_unverified",
            partial(legs.rclone_sftp, verified=False),
            partial(legs.conveyor_sftp, verified=False),
        ),
    ]
    measured = [
        {
            "raw_sftp": _measure("sftp raw_sftp", partial(legs.raw_sftp, bench, number)),
            **_pairs_round("sftp", bench, number, pairs),
        }
        for number in range(rounds)
    ]
    return _median_rounds(measured)


def _s3(bench: Bench, rounds: int) -> dict[str, Figures]:
    pairs: list[tuple[str, Leg, Leg]] = [("", legs.rclone_s3, legs.conveyor_s3)]
    return _median_rounds([_pairs_round("s3", bench, number, pairs) for number in range(rounds)])


def _ftp(bench: Bench, rounds: int) -> dict[str, Figures]:
    """S3 -> vsftpd: the large file against rclone (and unverified), then the small files."""
    pairs: list[tuple[str, Leg, Leg]] = [
        ("", ftp.rclone_large, partial(ftp.conveyor_large, verified=True))
    ]
    measured = [
        {
            **_pairs_round("ftp", bench, number, pairs),
            "conveyor_unverified": _measure(
                "ftp conveyor_unverified",
                partial(ftp.conveyor_large, bench, verified=False, round_number=number),
            ),
        }
        for number in range(rounds)
    ]
    found = _median_rounds(measured)
    found["rclone_small"] = _measure("ftp rclone_small", partial(ftp.rclone_small, bench))
    found["conveyor_small"] = _measure("ftp conveyor_small", partial(ftp.conveyor_small, bench))
    return found


def _small(bench: Bench) -> dict[str, Figures]:
    found: dict[str, Figures] = {}
    for verified in (True, False):
        suffix = "verified" if verified else "unverified"
        for name, leg in (
            (f"rclone_{suffix}", legs.rclone_small),
            (f"conveyor_{suffix}", legs.conveyor_small),
            (f"conveyor_copy_only_{suffix}", legs.conveyor_copy_only),
        ):
            found[name] = _measure(f"small {name}", partial(leg, bench, verified=verified))
    return found


def _workloads(options: Options) -> dict[str, int]:
    """Which routes the run needs: workload name -> rounds."""
    workloads: dict[str, int] = {}
    if "sftp" in options.only:
        workloads |= {"sftp_verified": options.rounds, "sftp_unverified": options.rounds}
    if "gcs" in options.only:
        workloads["gcs"] = 1
    if "s3" in options.only:
        workloads["s3"] = options.rounds
    if "small" in options.only:
        workloads |= {"small_verified": 1, "small_unverified": 1}
    if options.rss_4gib:
        workloads["rss_large"] = 1
    if "latency" in options.only:
        workloads["latency"] = 1
    return workloads


def _latency(bench: Bench, options: Options) -> dict[str, Figures]:
    """Last, with its own scanner settings (the service's defaults unless chosen)."""
    bench.pipeline.restart_scanner(options.latency_scanner_env, "scanner-latency")
    leg = partial(
        conveyor_latency,
        bench,
        files=options.latency_files,
        size=options.small_size,
        interval=options.latency_interval,
    )
    return {"conveyor_verified": _measure("latency conveyor_verified", leg)}


def _profiles(results: Results) -> str:
    """Every profile the small legs recorded, for the terminal."""
    return "\n".join(
        profile_text(f"{leg} {name}", profile)
        for leg, figures in results.get("small", {}).items()
        for name, profile in figures.get("profile", {}).items()
    )


def run_benchmark(options: Options) -> dict[str, object]:
    state = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    say(f"state directory: {state}")
    started = time.monotonic()
    about = machine()
    small = SmallFilesSettings(options.small_concurrency, options.small_sessions)
    results: Results = {}
    try:
        requests = RequestLog(state / "moto-requests.jsonl")
        with (
            running_stand_ins(
                state, gcs="gcs" in options.only, request_log=requests.path
            ) as stand_ins,
            ftp.running_vsftpd("ftp" in options.only) as vsftpd,
        ):
            say("stand-ins up; deploying the stack and creating the sources")
            pipeline = Pipeline(
                stand_ins,
                state,
                {
                    "CONVEYOR_BATCH_WINDOW_SECONDS": str(options.batch_window),
                    "CONVEYOR_BATCH_MAX_WAIT_SECONDS": str(options.batch_max_wait),
                },
            )
            try:
                large = options.large_size if options.only & {"sftp", "gcs", "s3", "ftp"} else 0
                if options.rss_4gib:
                    large = large or options.large_size
                sources = create_sources(
                    pipeline.s3,
                    state,
                    large_size=large,
                    small_count=options.small_files if options.only & {"small", "ftp"} else 0,
                    small_size=options.small_size,
                )
                if "gcs" in options.only:
                    stand_ins.create_gcs_bucket(legs.gcs_bucket(pipeline))
                if "s3" in options.only:
                    pipeline.s3.create_bucket(Bucket=legs.s3_bucket(pipeline))
                legs.add_routes(pipeline, _workloads(options), small)
                if vsftpd is not None:
                    ftp.add_routes(pipeline, vsftpd, options.rounds, small)
                pipeline.start_scanner()
                bench = Bench(
                    stand_ins,
                    pipeline,
                    sources,
                    Rclone(stand_ins, state, ftp.rclone_remote(vsftpd) if vsftpd else ()),
                    small,
                    requests=requests,
                    profiles=state / "profiles" if options.profile else None,
                    vsftpd=vsftpd,
                )
                if "sftp" in options.only:
                    say(f"sftp: {options.size_gib} GiB, S3 -> sshd")
                    results["sftp"] = _sftp(bench, options.rounds)
                if "gcs" in options.only:
                    say(f"gcs: {options.size_gib} GiB, S3 -> GCS emulator")
                    results["gcs"] = {
                        "rclone": _measure("gcs rclone", partial(legs.rclone_gcs, bench)),
                        "conveyor": _measure("gcs conveyor", partial(legs.conveyor_gcs, bench)),
                    }
                if "s3" in options.only:
                    say(f"s3: {options.size_gib} GiB, S3 -> another bucket")
                    results["s3"] = _s3(bench, options.rounds)
                if vsftpd is not None:
                    say(
                        f"ftp: {options.size_gib} GiB and {options.small_files} x "
                        f"{options.small_kib} KiB, S3 -> vsftpd"
                    )
                    results["ftp"] = _ftp(bench, options.rounds)
                if "small" in options.only:
                    say(f"small: {options.small_files} x {options.small_kib} KiB, S3 -> sshd")
                    results["small"] = _small(bench)
                if options.rss_4gib:
                    say(f"rss_4gib: {4 * options.size_gib} GiB, S3 -> sshd, verified")
                    results["rss_4gib"] = {
                        "conveyor_verified": _measure(
                            "rss_4gib conveyor", partial(legs.conveyor_rss_large, bench, 4)
                        )
                    }
                if "latency" in options.only:
                    say(
                        f"latency: {options.latency_files} x {options.small_kib} KiB, "
                        f"{options.latency_interval} s apart, S3 -> sshd"
                    )
                    results["latency"] = _latency(bench, options)
            finally:
                pipeline.stop()
    finally:
        if options.keep:
            say(f"kept {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)
    found = ratios(results)
    about["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if options.profile:
        say(_profiles(results))
    say(table(results, about))
    return {
        "command": "uv run python -m bench " + " ".join(sys.argv[1:]),
        "machine": about,
        "settings": {
            "size_gib": options.size_gib,
            "small_files": options.small_files,
            "small_kib": options.small_kib,
            "rounds": options.rounds,
            "scanner": {
                "CONVEYOR_BATCH_WINDOW_SECONDS": options.batch_window,
                "CONVEYOR_BATCH_MAX_WAIT_SECONDS": options.batch_max_wait,
                "CONVEYOR_RECEIVE_WAIT_SECONDS": 1,
            },
            "latency": {
                "files": options.latency_files,
                "interval_seconds": options.latency_interval,
                "scanner": options.latency_scanner_env or "the scanner's defaults",
            },
            "profile": options.profile,
            "transfer_sftp_small": {
                "CONVEYOR_CONCURRENCY": options.small_concurrency,
                "max_sessions": options.small_sessions,
            },
            "transfer_large": "service defaults (CONVEYOR_CONCURRENCY 8, route max_sessions 4, "
            "GCS chunk_mib 32); CONVEYOR_VERIFY=false for the unverified legs",
            "rclone": "defaults (--transfers 4, --checkers 8); --sftp-disable-hashcheck "
            "for the unverified legs",
        },
        "results": results,
        "ratios": found,
        "targets": {t.name: t.as_json() for t in targets(results, found)},
        "seconds": round(time.monotonic() - started, 1),
    }
