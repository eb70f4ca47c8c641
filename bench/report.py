"""From measurements to the report: medians over rounds, Conveyor/rclone ratios,
and each performance target with its verdict."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Figures = dict[str, Any]
Results = dict[str, dict[str, Figures]]

#: The figure a leg is judged by: throughput for one large file, files/s for many.
_HEADLINE = ("mb_per_s", "files_per_s")


def _median(values: Sequence[Any]) -> Any:
    """The median of numbers (nested in dicts too); anything else, if every round
    agrees on it, or else the list of what each round found."""
    first = values[0]
    if isinstance(first, dict):
        return {name: _median([v[name] for v in values if name in v]) for name in first}
    if isinstance(first, int | float) and not isinstance(first, bool):
        middle = statistics.median(values)
        whole = all(isinstance(v, int) for v in values) and middle == int(middle)
        return int(middle) if whole else round(middle, 2)
    return first if all(v == first for v in values) else list(values)


def combine(rounds: Sequence[Figures]) -> Figures:
    """One leg over several rounds: the median of every figure, and each round's
    headline figure under ``rounds``."""
    if len(rounds) == 1:
        return dict(rounds[0])
    combined = {name: _median([r[name] for r in rounds if name in r]) for name in rounds[0]}
    for headline in _HEADLINE:
        if headline in rounds[0]:
            combined["rounds"] = [r[headline] for r in rounds]
    return combined


def _value(results: Results, group: str, leg: str, figure: str) -> float | None:
    value = results.get(group, {}).get(leg, {}).get(figure)
    return float(value) if isinstance(value, int | float) else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 2)


def ratios(results: Results) -> dict[str, float | None]:
    def mbps(group: str, leg: str) -> float | None:
        return _value(results, group, leg, "mb_per_s")

    def fps(leg: str) -> float | None:
        return _value(results, "small", leg, "files_per_s")

    found = {
        "sftp_verified_vs_rclone_verified": _ratio(
            mbps("sftp", "conveyor_verified"), mbps("sftp", "rclone_verified")
        ),
        "sftp_unverified_vs_rclone_unverified": _ratio(
            mbps("sftp", "conveyor_unverified"), mbps("sftp", "rclone_unverified")
        ),
        "sftp_unverified_vs_raw_sftp": _ratio(
            mbps("sftp", "conveyor_unverified"), mbps("sftp", "raw_sftp")
        ),
        "sftp_verified_vs_raw_sftp": _ratio(
            mbps("sftp", "conveyor_verified"), mbps("sftp", "raw_sftp")
        ),
        "small_verified_vs_rclone_verified": _ratio(
            fps("conveyor_verified"), fps("rclone_verified")
        ),
        "small_unverified_vs_rclone_verified": _ratio(
            fps("conveyor_unverified"), fps("rclone_verified")
        ),
        "small_unverified_vs_rclone_unverified": _ratio(
            fps("conveyor_unverified"), fps("rclone_unverified")
        ),
        "gcs_vs_rclone": _ratio(mbps("gcs", "conveyor"), mbps("gcs", "rclone")),
        "s3_vs_rclone": _ratio(mbps("s3", "conveyor"), mbps("s3", "rclone")),
        "ftp_verified_vs_rclone": _ratio(mbps("ftp", "conveyor"), mbps("ftp", "rclone")),
        "ftp_unverified_vs_rclone": _ratio(
            mbps("ftp", "conveyor_unverified"), mbps("ftp", "rclone")
        ),
        "ftp_small_vs_rclone": _ratio(
            _value(results, "ftp", "conveyor_small", "files_per_s"),
            _value(results, "ftp", "rclone_small", "files_per_s"),
        ),
    }
    return {name: value for name, value in found.items() if value is not None}


@dataclass(frozen=True)
class Target:
    name: str
    value: float | bool | None
    wanted: str
    met: bool | None

    def as_json(self) -> Figures:
        return {"value": self.value, "target": self.wanted, "met": self.met}


def _at_least(name: str, value: float | None, minimum: float) -> Target:
    met = None if value is None else value >= minimum
    return Target(name, value, f">= {minimum}", met)


def _at_most(name: str, value: float | None, maximum: float) -> Target:
    met = None if value is None else value <= maximum
    return Target(name, value, f"<= {maximum}", met)


def _latency(results: Results, percentile: str) -> float | None:
    spread = results.get("latency", {}).get("conveyor_verified", {}).get("arrival_to_delivered")
    return float(spread[percentile]) if isinstance(spread, dict) else None


def _peak_rss(results: Results, legs: Mapping[str, Sequence[str]]) -> float | None:
    peaks = [
        float(figures["peak_rss_mb"])
        for group, names in legs.items()
        for name, figures in results.get(group, {}).items()
        if name in names and "peak_rss_mb" in figures
    ]
    return max(peaks) if peaks else None


def _no_payload(s3: Figures | None) -> bool | None:
    """S3 to S3 copied server-side with no payload through the worker; ``None`` when
    not measured (the leg failed, or this machine cannot count socket reads)."""
    if s3 is None or "error" in s3 or s3.get("payload_through_worker") is None:
        return None
    # Every round must agree: a list here means the rounds differed.
    return s3["server_side"] is True and s3["payload_through_worker"] is False


def targets(results: Results, found: Mapping[str, float | None]) -> list[Target]:
    listed = [
        _at_least(
            "sftp 1 GiB verified, x rclone verified",
            found.get("sftp_verified_vs_rclone_verified"),
            1.5,
        ),
        _at_least(
            "sftp 1 GiB unverified, x rclone unverified",
            found.get("sftp_unverified_vs_rclone_unverified"),
            1.0,
        ),
        _at_least(
            "sftp 1 GiB unverified, x raw OpenSSH sftp",
            found.get("sftp_unverified_vs_raw_sftp"),
            0.8,
        ),
        _at_least(
            "small files through the pipeline verified, x rclone verified",
            found.get("small_verified_vs_rclone_verified"),
            1.5,
        ),
        _at_least(
            "small files through the pipeline verified, x rclone verified (moonshot)",
            found.get("small_verified_vs_rclone_verified"),
            2.0,
        ),
        _at_most("arrival to delivered, p50 (s)", _latency(results, "p50"), 1.0),
        _at_most("arrival to delivered, p99 (s)", _latency(results, "p99"), 3.0),
        _at_most(
            "AWS requests per small file, whole pipeline",
            _value(results, "small", "conveyor_verified", "aws_requests_per_file"),
            7.0,
        ),
    ]
    one_gib = _peak_rss(
        results,
        {
            "sftp": ("conveyor_verified", "conveyor_unverified"),
            "gcs": ("conveyor",),
            "s3": ("conveyor",),
        },
    )
    listed.append(
        Target(
            "peak RSS of a transfer worker, 1 GiB (MB)",
            one_gib,
            "< 150",
            None if one_gib is None else one_gib < 150,
        )
    )
    four_gib = _peak_rss(results, {"rss_4gib": ("conveyor_verified",)})
    listed.append(
        Target(
            "peak RSS of a transfer worker, 4 GiB (MB)",
            four_gib,
            "< 150",
            None if four_gib is None else four_gib < 150,
        )
    )
    no_payload = _no_payload(results.get("s3", {}).get("conveyor"))
    listed.append(
        Target(
            "S3 to S3 server-side, no payload through the worker",
            no_payload,
            "true",
            no_payload,
        )
    )
    return listed


def _leg_line(group: str, leg: str, figures: Figures) -> str:
    if "error" in figures:
        return f"{group:<7} {leg:<28} error: {figures['error'][:60]}"
    cpu = figures.get("cpu_ms_per_file", {})
    return (
        f"{group:<7} {leg:<28} {figures.get('mb_per_s', ''):>7} "
        f"{figures.get('files_per_s', ''):>8} {figures.get('seconds', ''):>8} "
        f"{figures.get('peak_rss_mb', ''):>8} {figures.get('cpu_seconds', ''):>6} "
        f"{cpu.get('worker', ''):>9} {cpu.get('scanner', ''):>10} "
        f"{figures.get('aws_requests_per_file', ''):>9}"
    )


def _latency_lines(figures: Figures) -> list[str]:
    if "error" in figures:
        return [f"latency error: {figures['error'][:100]}"]
    whole = figures["arrival_to_delivered"]
    lines = [
        f"latency: {figures['files']} files {figures['interval_seconds']} s apart, "
        f"{figures['jobs']} jobs: arrival -> delivered p50 {whole['p50']} s, "
        f"p99 {whole['p99']} s, max {whole['max']} s; batch window share "
        f"{figures['batch_window_share']} (scanner wait until {figures['scanner_wait_ends_at']})"
    ]
    lines += [
        f"  {name:<24} p50 {phase['p50']:>7} s  p99 {phase['p99']:>7} s  share {phase['share']}"
        for name, phase in figures["phases"].items()
    ]
    return lines


def table(results: Results, machine: Mapping[str, Any]) -> str:
    """The results as a plain-text table, for the terminal, with the machine's load."""
    lines = [
        f"{'group':<7} {'leg':<28} {'MB/s':>7} {'files/s':>8} {'seconds':>8} "
        f"{'RSS MB':>8} {'CPU s':>6} {'worker ms':>9} {'scanner ms':>10} {'AWS req':>9}"
    ]
    for group, legs in results.items():
        for leg, figures in legs.items():
            if group == "latency":
                lines += _latency_lines(figures)
            else:
                lines.append(_leg_line(group, leg, figures))
    lines.append(
        "(worker ms, scanner ms: CPU per file; AWS req: AWS requests per file, end to end)"
    )
    lines.append(
        f"load average at start {machine.get('load_average_at_start')}, "
        f"at end {machine.get('load_average_at_end')} ({machine.get('cores')} cores)"
    )
    return "\n".join(lines)
