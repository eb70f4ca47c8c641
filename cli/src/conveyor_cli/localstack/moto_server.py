"""moto in server mode, with DynamoDB's atomicity.

moto serves each request on its own thread and takes no lock around a
DynamoDB write: two conditional updates of one item, or two transactions,
can both pass their conditions, and a transaction that fails restores a
copy of the table taken before another one committed. Real DynamoDB never
does either. DynamoDB calls never block (unlike an SQS long poll), so this
server runs them one at a time and every other service as moto does.

Run as ``python -m conveyor_cli.localstack.moto_server -H HOST -p PORT``.
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def one_dynamodb_call_at_a_time(app: Wsgi) -> Wsgi:
    lock = threading.Lock()

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
            return app(environ, start_response)
        with lock:
            # Read the whole reply under the lock: the write happens as it is made.
            return list(app(environ, start_response))

    return serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        one_dynamodb_call_at_a_time(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
