"""``rclone copy`` (Debian's package) against the same stand-ins, with a config
file of its own (``RCLONE_CONFIG``) and without ``AWS_CA_BUNDLE``, which
breaks its S3 backend."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from bench.measure import Usage, run_command
from bench.standins import StandIns
from conveyor_cli.localstack.servers import LOCAL_AWS_ENV

RCLONE = "/usr/bin/rclone"


def rclone_version() -> str:
    result = subprocess.run([RCLONE, "version"], capture_output=True, text=True, check=False)
    return result.stdout.split("\n", 1)[0].strip()


class Rclone:
    """Remotes ``s3`` (moto), ``sftp`` (sshd, host key pinned), ``gcs`` (the
    emulator), and any ``more_remotes`` (config lines: the FTP legs' ``ftp``)."""

    def __init__(self, stand_ins: StandIns, state: Path, more_remotes: Sequence[str] = ()) -> None:
        self._config = state / "rclone.conf"
        self._logs = state / "logs"
        sshd = stand_ins.sshd
        remotes = [
            "[s3]",
            "type = s3",
            "provider = Other",
            "env_auth = false",
            f"access_key_id = {LOCAL_AWS_ENV['AWS_ACCESS_KEY_ID']}",
            f"secret_access_key = {LOCAL_AWS_ENV['AWS_SECRET_ACCESS_KEY']}",
            "region = us-east-1",
            f"endpoint = {stand_ins.moto.url}",
            "force_path_style = true",
            "",
            "[sftp]",
            "type = sftp",
            "host = 127.0.0.1",
            f"port = {sshd.port}",
            f"user = {sshd.username}",
            f"key_file = {sshd.client_key_path}",
            f"known_hosts_file = {stand_ins.known_hosts}",
            "",
        ]
        if stand_ins.gcs is not None:
            remotes += [
                "[gcs]",
                "type = google cloud storage",
                "anonymous = true",
                f"endpoint = {stand_ins.gcs.host}/storage/v1/",
                "",
            ]
        self._config.write_text("\n".join([*remotes, *more_remotes]))

    def copy(self, source: str, destination: str, *flags: str, log_name: str) -> Usage:
        """``rclone copy SOURCE DESTINATION`` with rclone's defaults plus ``flags``."""
        env = {**os.environ, "RCLONE_CONFIG": str(self._config)}
        env.pop("AWS_CA_BUNDLE", None)
        return run_command(
            [RCLONE, "copy", "-v", source, destination, *flags],
            env=env,
            log=self._logs / f"{log_name}.log",
        )
