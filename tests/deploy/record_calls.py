"""Regenerate ``tests/deploy/aws_calls.json``: every AWS call each service made
while the integration tests that run it ran, folded into one sorted list.

    uv run python -m tests.deploy.record_calls            # run the tests, then fold
    uv run python -m tests.deploy.record_calls --fold DIR # fold an earlier recording

The tests run with ``CONVEYOR_AWS_CALL_LOG`` set, so every service (in-process
or as a process) appends its calls to ``DIR/<service>.jsonl``
(``conveyor_shared.aws_calls``). Folding keeps only what IAM authorises by
(``tests.deploy.iam.requests_of``), with test stack names and unique suffixes
replaced, and an object key cut to its first segment. Run it after a change
to what a service calls, and commit the result with the template change that
allows it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.deploy.iam import normalise, requests_of

OUT = Path(__file__).with_name("aws_calls.json")
#: The integration tests that run each service; the fold fails if one is missing.
TESTS = [
    "tests/integration/test_scanner.py",
    "tests/integration/test_transfer_gcs.py",
    "tests/integration/test_transfer_sftp.py",
    "tests/integration/test_transfer_s3.py",
    "tests/integration/test_notifier.py",
    "tests/integration/test_three_strikes.py",
    "tests/integration/test_provider_sync.py",
    "tests/integration/test_transfer_ftp.py",
    "tests/integration/test_api.py",
    "tests/integration/test_api_delivery.py",
    "tests/integration/test_api_sources.py",
]


def _short(resource: str) -> str:
    """An S3 object ARN as its bucket and first key segment: keys name test files."""
    if not resource.startswith("arn:aws:s3:::") or "/" not in resource:
        return resource
    bucket, _, key = resource.removeprefix("arn:aws:s3:::").partition("/")
    first = key.split("/", 1)[0] if "/" in key else ""
    return f"arn:aws:s3:::{bucket}/{first}/object" if first else f"arn:aws:s3:::{bucket}/object"


def fold(directory: Path) -> list[dict[str, str]]:
    seen: set[tuple[str, str, str]] = set()
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            call = json.loads(line)
            for request in requests_of(call):
                seen.add((call["service"], request.action, _short(normalise(request.resource))))
    return [{"service": s, "action": a, "resource": r} for s, a, r in sorted(seen)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fold", type=Path, help="fold this recording instead of running tests")
    args = parser.parse_args()
    directory = args.fold
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="conveyor-calls-"))
        env = {**os.environ, "CONVEYOR_AWS_CALL_LOG": str(directory)}
        command = [sys.executable, "-m", "pytest", "-p", "no:xdist", "-q", *TESTS]
        if subprocess.run(command, env=env, check=False).returncode != 0:
            sys.stderr.write("tests failed: the recording may be incomplete; not written\n")
            return 1
    calls = fold(directory)
    OUT.write_text(json.dumps(calls, indent=1) + "\n")
    sys.stdout.write(f"{len(calls)} distinct calls written to {OUT}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
