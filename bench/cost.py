"""Monthly cost of running Conveyor on AWS for a stated volume (D13, B5), from
the measured AWS requests per file, with the arithmetic shown.

    uv run python -m bench.cost                          # the scenarios of docs/cost.md
    uv run python -m bench.cost --files 250000 --terabytes 5
    uv run python -m bench.cost --requests-per-file 7    # scale the measured mix to 7

The per-file figures default to the measured S3-to-SFTP leg of
``bench.requests`` (docs/benchmarks.md): DynamoDB write and read units, SQS,
S3 GET/HEAD, SNS and Secrets Manager requests per delivered file.
``--requests-per-file N`` scales every one of them by N / the measured total,
for a change that cuts requests across the board; pass the individual flags
instead when a new measurement gives the new mix. Fixed costs (Fargate at the
minimum tasks, the load balancer, the NAT gateway, alarms and metrics,
secrets) come from the defaults of deploy/services.yaml. Prices: us-east-1
list prices, on demand, no free tier.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, replace

from bench.pricing import (
    DYNAMODB_PER_RRU,
    DYNAMODB_PER_WRU,
    S3_PER_READ_CLASS,
    S3_PER_WRITE_CLASS,
    SECRETS_PER_REQUEST,
    SNS_PER_REQUEST,
    SQS_PER_REQUEST,
)

HOURS = 730  # a month
GB = 1024  # GB per TB (AWS bills data in GiB)

FARGATE_ARM_VCPU_HOUR = 0.03238
FARGATE_ARM_GB_HOUR = 0.00356
ALB_HOUR, ALB_LCU_HOUR = 0.0225, 0.008
NAT_HOUR, NAT_PER_GB = 0.045, 0.045
INTERNET_OUT_PER_GB = 0.09  # first 10 TB a month
S3_STANDARD_GB_MONTH = 0.023
DYNAMODB_GB_MONTH, PITR_GB_MONTH = 0.25, 0.20
LOGS_INGEST_PER_GB, LOGS_STORE_GB_MONTH = 0.50, 0.03
ALARM_MONTH, CUSTOM_METRIC_MONTH = 0.10, 0.30
SECRET_MONTH = 0.40


@dataclass(frozen=True)
class PerFile:
    """AWS requests per delivered file, by what they are billed as (measured)."""

    #: Requests the services make per file (docs/benchmarks.md's total); the
    #: billed figures below are their breakdown.
    requests: float = 8.25
    dynamodb_wru: float = 4.59
    dynamodb_rru: float = 0.20
    sqs: float = 1.47
    #: S3's event into the scanner queue: an SQS request no service makes.
    s3_events: float = 1.0
    #: The scanner's and the worker's GetObject, and DeleteObjects (0.14)
    #: priced with them.
    s3_reads: float = 2.14
    #: 1.00 for a delivery to S3 (the server-side CopyObject); 0 to GCS or SFTP.
    s3_writes: float = 0.0
    sns: float = 0.01
    secrets: float = 0.004
    #: Log lines a file adds (arrived ... delivered, across services), in KB.
    log_kb: float = 6.0
    #: Bytes of a ledger entry (files table, with its indexes), in KB.
    ledger_kb: float = 1.5

    def scaled_to(self, total: float) -> PerFile:
        factor = total / self.requests
        return replace(
            self,
            requests=total,
            dynamodb_wru=self.dynamodb_wru * factor,
            dynamodb_rru=self.dynamodb_rru * factor,
            sqs=self.sqs * factor,
            s3_reads=self.s3_reads * factor,
            s3_writes=self.s3_writes * factor,
            sns=self.sns * factor,
        )


@dataclass(frozen=True)
class Fixed:
    """What runs whatever the volume: deploy/services.yaml's defaults."""

    #: (vCPU, GB) of each service at its minimum of one task.
    tasks: tuple[tuple[float, float], ...] = (
        (0.5, 1.0),  # scanner
        (0.5, 1.0),  # transfer-gcs
        (0.5, 1.0),  # transfer-sftp
        (0.5, 1.0),  # transfer-s3
        (0.25, 0.5),  # notifier
        (0.5, 1.0),  # provider-sync
        (0.5, 1.0),  # api
    )
    #: Long-poll loops (20 s wait: 3 receives a minute each when idle): each work
    #: queue (7) and each transfer dead-letter queue (3); the notifier's
    #: dead-letter watch reads 2 queues' attributes once a minute.
    pollers: int = 10
    watch_requests_a_minute: int = 2
    #: Alarms: deploy/conveyor.yaml's (19) and services.yaml's (1), plus the two
    #: that each target-tracking policy creates (15 policies).
    alarms: int = 19 + 1 + 2 * 15
    #: EMF metrics (2 names x the [Stack] set and [Stack, Service] for 7 services)
    #: and Container Insights (about 13 metrics a service plus 8 for the cluster).
    custom_metrics: int = 2 * (1 + 7) + 13 * 7 + 8
    secrets: int = 10
    #: Pick-up reads go through an S3 gateway endpoint (free); GCS and SFTP
    #: deliveries leave through the NAT gateway.
    nat_gateways: int = 1
    #: A deleted pick-up version is kept 14 days (the bucket's lifecycle rule).
    noncurrent_days: int = 14


@dataclass(frozen=True)
class Line:
    item: str
    arithmetic: str
    usd: float


def requests_lines(files: int, per: PerFile) -> list[Line]:
    def line(item: str, count: float, unit: str, price: float, per_units: str) -> Line:
        usd = files * count * price
        text = f"{files:,} x {count:.2f} {unit} x {per_units}"
        return Line(item, text, usd)

    return [
        line("DynamoDB writes", per.dynamodb_wru, "WRU", DYNAMODB_PER_WRU, "$0.625 / 10^6"),
        line("DynamoDB reads", per.dynamodb_rru, "RRU", DYNAMODB_PER_RRU, "$0.125 / 10^6"),
        line("SQS requests", per.sqs, "requests", SQS_PER_REQUEST, "$0.40 / 10^6"),
        line("SQS: S3 events", per.s3_events, "requests", SQS_PER_REQUEST, "$0.40 / 10^6"),
        line("S3 GET/HEAD", per.s3_reads, "requests", S3_PER_READ_CLASS, "$0.0004 / 10^3"),
        line(
            "S3 PUT/COPY (S3 routes)",
            per.s3_writes,
            "requests",
            S3_PER_WRITE_CLASS,
            "$0.005 / 10^3",
        ),
        line("SNS publishes", per.sns, "requests", SNS_PER_REQUEST, "$0.50 / 10^6"),
        line("Secrets Manager API", per.secrets, "requests", SECRETS_PER_REQUEST, "$0.05 / 10^4"),
    ]


def fixed_lines(fixed: Fixed) -> list[Line]:
    vcpu = sum(t[0] for t in fixed.tasks)
    memory = sum(t[1] for t in fixed.tasks)
    idle = fixed.pollers * 3 * 60 * HOURS + fixed.watch_requests_a_minute * 60 * HOURS
    return [
        Line(
            "Fargate (ARM, minimum tasks)",
            f"{vcpu:g} vCPU x {HOURS} h x ${FARGATE_ARM_VCPU_HOUR} + {memory:g} GB x {HOURS} h"
            f" x ${FARGATE_ARM_GB_HOUR}",
            vcpu * HOURS * FARGATE_ARM_VCPU_HOUR + memory * HOURS * FARGATE_ARM_GB_HOUR,
        ),
        Line(
            "SQS idle long polls",
            f"({fixed.pollers} pollers x 3 + {fixed.watch_requests_a_minute}) a minute x 60 x"
            f" {HOURS} h x $0.40 / 10^6",
            idle * SQS_PER_REQUEST,
        ),
        Line(
            "Load balancer (API)",
            f"{HOURS} h x (${ALB_HOUR} + 1 LCU x ${ALB_LCU_HOUR})",
            HOURS * (ALB_HOUR + ALB_LCU_HOUR),
        ),
        Line(
            "NAT gateway (hours)",
            f"{fixed.nat_gateways} x {HOURS} h x ${NAT_HOUR}",
            fixed.nat_gateways * HOURS * NAT_HOUR,
        ),
        Line(
            "CloudWatch alarms",
            f"{fixed.alarms} x ${ALARM_MONTH}",
            fixed.alarms * ALARM_MONTH,
        ),
        Line(
            "CloudWatch metrics (EMF, Container Insights)",
            f"{fixed.custom_metrics} x ${CUSTOM_METRIC_MONTH}",
            fixed.custom_metrics * CUSTOM_METRIC_MONTH,
        ),
        Line(
            "Secrets Manager secrets",
            f"{fixed.secrets} x ${SECRET_MONTH}",
            fixed.secrets * SECRET_MONTH,
        ),
    ]


def volume_lines(
    files: int, terabytes: float, leaving_aws: float, per: PerFile, fixed: Fixed
) -> list[Line]:
    gb_out = terabytes * GB * leaving_aws
    log_gb = files * per.log_kb / 1024 / 1024
    ledger_gb = files * per.ledger_kb / 1024 / 1024
    kept = terabytes * GB * fixed.noncurrent_days / 30
    return [
        Line(
            "Data transfer out (to GCS, SFTP)",
            f"{terabytes:g} TB x {GB} x {leaving_aws:.0%} x ${INTERNET_OUT_PER_GB}",
            gb_out * INTERNET_OUT_PER_GB,
        ),
        Line("NAT gateway (data)", f"{gb_out:,.0f} GB x ${NAT_PER_GB}", gb_out * NAT_PER_GB),
        Line(
            "S3 storage (deleted pick-ups kept 14 days)",
            f"{terabytes:g} TB x {GB} x {fixed.noncurrent_days}/30 x ${S3_STANDARD_GB_MONTH}",
            kept * S3_STANDARD_GB_MONTH,
        ),
        Line(
            "CloudWatch Logs",
            f"{files:,} x {per.log_kb:g} KB = {log_gb:.2f} GB x (${LOGS_INGEST_PER_GB} +"
            f" ${LOGS_STORE_GB_MONTH})",
            log_gb * (LOGS_INGEST_PER_GB + LOGS_STORE_GB_MONTH),
        ),
        Line(
            "DynamoDB storage + PITR (the month's entries)",
            f"{files:,} x {per.ledger_kb:g} KB = {ledger_gb:.2f} GB x (${DYNAMODB_GB_MONTH} +"
            f" ${PITR_GB_MONTH})",
            ledger_gb * (DYNAMODB_GB_MONTH + PITR_GB_MONTH),
        ),
    ]


def markdown(
    title: str, files: int, terabytes: float, leaving_aws: float, per: PerFile, fixed: Fixed
) -> str:
    sections = {
        f"Per file ({per.requests:.2f} service requests a file)": requests_lines(files, per),
        "Volume": volume_lines(files, terabytes, leaving_aws, per, fixed),
        "Fixed (whatever the volume)": fixed_lines(fixed),
    }
    rows = [f"### {title}", "", "| item | arithmetic | USD / month |", "|---|---|---:|"]
    total = 0.0
    for name, lines in sections.items():
        subtotal = sum(line.usd for line in lines)
        total += subtotal
        rows.append(f"| **{name}** | | **{subtotal:,.2f}** |")
        rows += [f"| {line.item} | {line.arithmetic} | {line.usd:,.2f} |" for line in lines]
    rows.append(f"| **total** | | **{total:,.2f}** |")
    return "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, action="append", help="files a month (repeatable)")
    parser.add_argument("--terabytes", type=float, default=1.0, help="bytes delivered a month")
    parser.add_argument(
        "--leaving-aws", type=float, default=1.0, help="share of bytes to GCS or SFTP (0-1)"
    )
    parser.add_argument("--requests-per-file", type=float, action="append", help="scale the mix")
    measured = PerFile()
    for name in ("dynamodb_wru", "dynamodb_rru", "sqs", "s3_reads", "s3_writes", "sns"):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=float, default=getattr(measured, name)
        )
    args = parser.parse_args(argv)
    per = replace(
        measured,
        **{
            k: getattr(args, k)
            for k in ("dynamodb_wru", "dynamodb_rru", "sqs", "s3_reads", "s3_writes", "sns")
        },
    )
    mixes = [per] + [per.scaled_to(n) for n in args.requests_per_file or []]
    for files in args.files or [10_000, 1_000_000]:
        for mix in mixes:
            title = f"{files:,} files, {args.terabytes:g} TB, {mix.requests:.2f} requests a file"
            print(markdown(title, files, args.terabytes, args.leaving_aws, mix, Fixed()))


if __name__ == "__main__":
    main()
