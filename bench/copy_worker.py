"""``python -m bench.copy_worker``: Conveyor's transfer path alone, in its own process.

Lists a prefix in S3 and ``copy()``s every object to an SFTP directory through
``S3Store`` and ``SftpStore`` (one connection pool, as transfer-sftp uses),
``--concurrency`` files at once, then writes ``{"seconds": ..., "files": ...}``
to ``--result`` (timed from the listing to the last file, not the imports).
No queue, no ledger: set beside the pipeline's figure, it shows how much of the
pipeline's time is the transfer itself and how much the stand-ins' queues and
tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import aioboto3

from conveyor_shared.aws import CLIENT_CONFIG
from conveyor_shared.backends.s3 import S3Store
from conveyor_shared.backends.sftp import SftpConnectionPool, SftpServer, SftpStore
from conveyor_shared.secrets import SftpCredentials
from conveyor_shared.transfer.copy import copy
from conveyor_shared.transfer.protocols import ObjectInfo


async def copy_all(args: argparse.Namespace, key: str) -> dict[str, float]:
    async def credentials() -> SftpCredentials:
        return SftpCredentials.model_validate({"private_key": key})

    server = SftpServer("127.0.0.1", args.port, args.user, (args.host_key,))
    pool = SftpConnectionPool(server, credentials, args.sessions)
    destination = SftpStore(
        pool, args.directory, create_directory=True, verify_checksum=args.verify
    )
    slots = asyncio.Semaphore(args.concurrency)
    started = time.monotonic()
    async with aioboto3.Session().client("s3", config=CLIENT_CONFIG) as s3:
        source = S3Store(s3, args.bucket)
        infos = [info async for info in source.list(args.prefix)]

        async def one(info: ObjectInfo) -> None:
            async with slots:
                name = info.path[len(args.prefix) :]
                await copy(source, info, destination, name, verify=args.verify)

        await asyncio.gather(*(one(info) for info in infos))
    seconds = time.monotonic() - started
    await pool.close()
    return {"seconds": seconds, "files": len(infos)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.copy_worker")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--host-key", required=True)
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--directory", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--verify", action="store_true")
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    key = Path(args.key_file).read_text()
    args.result.write_text(json.dumps(asyncio.run(copy_all(args, key))))


if __name__ == "__main__":
    main()
