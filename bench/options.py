"""The benchmark's command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

GROUPS = ("sftp", "gcs", "s3", "small", "latency", "ftp")


@dataclass(frozen=True)
class Options:
    size_gib: float
    small_files: int
    small_kib: int
    only: frozenset[str]
    rounds: int
    rss_4gib: bool
    small_concurrency: int
    small_sessions: int
    batch_window: float
    batch_max_wait: float
    latency_files: int
    latency_interval: float
    latency_batch_window: float | None
    latency_batch_max_wait: float | None
    profile: bool
    output: Path | None
    keep: bool

    @property
    def latency_scanner_env(self) -> dict[str, str]:
        """The scanner's batching for the latency leg: the service's defaults unless set."""
        chosen = {
            "CONVEYOR_BATCH_WINDOW_SECONDS": self.latency_batch_window,
            "CONVEYOR_BATCH_MAX_WAIT_SECONDS": self.latency_batch_max_wait,
        }
        return {name: str(value) for name, value in chosen.items() if value is not None}

    @property
    def large_size(self) -> int:
        return int(self.size_gib * 1024**3)

    @property
    def small_size(self) -> int:
        return self.small_kib * 1024


def _groups(text: str) -> frozenset[str]:
    chosen = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = chosen - set(GROUPS)
    if not chosen or unknown:
        raise argparse.ArgumentTypeError(
            f"choose from {', '.join(GROUPS)} (got {', '.join(sorted(unknown)) or 'nothing'})"
        )
    return chosen


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Conveyor against rclone copy and OpenSSH's sftp on the same stand-ins; "
        "prints one JSON object (docs/benchmarks.md).",
    )
    parser.add_argument("--size-gib", type=float, default=1.0, help="large file size (1)")
    parser.add_argument(
        "--small-files", "--files", type=int, default=500, help="number of small files (500)"
    )
    parser.add_argument("--small-kib", type=int, default=64, help="size of each small file (64)")
    parser.add_argument(
        "--only",
        type=_groups,
        default=frozenset(GROUPS),
        help=f"comma-separated groups to run: {','.join(GROUPS)} (all)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="repeat the 1 GiB sftp and s3 comparisons, alternating which tool goes "
        "first, and report medians (3)",
    )
    parser.add_argument(
        "--rss-4gib",
        action="store_true",
        help="also check transfer-sftp's peak RSS on a 4 GiB file (slow: moto's memory "
        "grows by several GB, and it needs about 4 GiB of free disk)",
    )
    parser.add_argument(
        "--small-concurrency",
        type=int,
        default=16,
        help="transfer-sftp's CONVEYOR_CONCURRENCY for the small files (16)",
    )
    parser.add_argument(
        "--small-sessions",
        type=int,
        default=8,
        help="the small-files route's max_sessions: SSH connections to the server (8)",
    )
    parser.add_argument(
        "--batch-window",
        type=float,
        default=0.5,
        help="scanner's CONVEYOR_BATCH_WINDOW_SECONDS: quiet time that closes a job (0.5)",
    )
    parser.add_argument(
        "--batch-max-wait",
        type=float,
        default=5.0,
        help="scanner's CONVEYOR_BATCH_MAX_WAIT_SECONDS: a job at least this often (5)",
    )
    parser.add_argument("--latency-files", type=int, default=100, help="files put one by one (100)")
    parser.add_argument(
        "--latency-interval", type=float, default=0.2, help="seconds between their puts (0.2)"
    )
    parser.add_argument(
        "--latency-batch-window",
        type=float,
        help="CONVEYOR_BATCH_WINDOW_SECONDS for the latency leg (the scanner's default)",
    )
    parser.add_argument(
        "--latency-batch-max-wait",
        type=float,
        help="CONVEYOR_BATCH_MAX_WAIT_SECONDS for the latency leg (the scanner's default)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record the scanner and transfer-sftp with py-spy during the small-files legs "
        "and print their top functions (the sampling costs them some CPU: take throughput "
        "from a run without it)",
    )
    parser.add_argument("--output", type=Path, help="also write the JSON to this file")
    parser.add_argument(
        "--keep", action="store_true", help="keep the state directory (logs, configs)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.small_files < 1 or args.latency_files < 1 or args.size_gib <= 0:
        parser.error(
            "--rounds, --small-files and --latency-files must be at least 1, --size-gib positive"
        )
    return Options(
        size_gib=args.size_gib,
        small_files=args.small_files,
        small_kib=args.small_kib,
        only=args.only,
        rounds=args.rounds,
        rss_4gib=args.rss_4gib,
        small_concurrency=args.small_concurrency,
        small_sessions=args.small_sessions,
        batch_window=args.batch_window,
        batch_max_wait=args.batch_max_wait,
        latency_files=args.latency_files,
        latency_interval=args.latency_interval,
        latency_batch_window=args.latency_batch_window,
        latency_batch_max_wait=args.latency_batch_max_wait,
        profile=args.profile,
        output=args.output,
        keep=args.keep,
    )
