"""``uv run python -m bench [--only sftp,gcs,s3,small,latency] [--rounds N] [--profile]``"""

import json

from bench.options import parse_options
from bench.run import run_benchmark


def main() -> None:
    options = parse_options()
    report = run_benchmark(options)
    text = json.dumps(report, indent=2)
    if options.output is not None:
        options.output.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
