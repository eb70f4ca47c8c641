"""moto in server mode, with DynamoDB's atomicity.

moto serves each request on its own thread and takes no lock around a
DynamoDB write: two conditional updates of one item, or two transactions,
can both pass their conditions, and a transaction that fails restores a
copy of the table taken before another one committed. Real DynamoDB never
does either. DynamoDB calls never block (unlike an SQS long poll), so this
server runs them one at a time and every other service as moto does.

With ``CONVEYOR_MOTO_REQUEST_LOG=<file>`` (off by default) it also writes
one JSON line per request to that file: who called (the ``app/<id>`` of the
caller's User-Agent, which botocore takes from ``AWS_SDK_UA_APP_ID``), which
operation (``dynamodb.UpdateItem``, ``s3.HeadObject``...), the status, and
what DynamoDB bills by (the table of each item written or read, whether the
read is strongly consistent, how many items a query returned).
``bench.requests`` counts a delivered file's AWS requests with it.

Run as ``python -m conveyor_cli.localstack.moto_server -H HOST -p PORT``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

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


_CALLER = re.compile(r"(?:^| )app/(\S+)")
_SCOPE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/")
#: Query-string markers of S3 sub-resources, as S3 names the operation on them.
_S3_SUBRESOURCES = (
    ("uploads", "MultipartUpload"),
    ("uploadId", "Part"),
    ("versions", "ObjectVersions"),
    ("versioning", "BucketVersioning"),
    ("tagging", "Tagging"),
    ("notification", "BucketNotificationConfiguration"),
    ("encryption", "BucketEncryption"),
    ("delete", "Objects"),
)
#: Replies whose size matters: messages received, items a query read.
_COUNTED_REPLIES = {"sqs.ReceiveMessage", "dynamodb.Query", "dynamodb.Scan"}
_S3_VERBS = {"GET": "Get", "PUT": "Put", "DELETE": "Delete", "HEAD": "Head", "POST": "Post"}


def _s3_operation(environ: dict[str, Any], query: dict[str, list[str]]) -> str:
    """S3's REST operation name from the method, path and query (path-style URLs)."""
    method = str(environ["REQUEST_METHOD"])
    has_key = len(environ.get("PATH_INFO", "/").strip("/").split("/", 1)) == 2
    for marker, name in _S3_SUBRESOURCES:
        if marker in query:
            if marker == "uploadId":
                verb = {"PUT": "Upload", "POST": "Complete", "DELETE": "Abort"}.get(method)
                return f"{verb}MultipartUpload" if verb != "Upload" else "UploadPart"
            if marker == "uploads":
                return "CreateMultipartUpload" if method == "POST" else "ListMultipartUploads"
            return ("List" if marker == "versions" else _S3_VERBS[method]) + name
    if not has_key:
        if method == "GET":
            return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
        return {"PUT": "CreateBucket", "HEAD": "HeadBucket"}.get(method, f"{method}Bucket")
    if method == "PUT" and "HTTP_X_AMZ_COPY_SOURCE" in environ:
        return "CopyObject"
    return _S3_VERBS.get(method, method) + "Object"


def _dynamodb_billing(body: dict[str, Any]) -> dict[str, Any]:
    """What DynamoDB bills a request by: the table of every item it writes or
    reads, and whether it reads strongly consistently."""
    tables = [next(iter(item.values()))["TableName"] for item in body.get("TransactItems", [])]
    for table, requests in body.get("RequestItems", {}).items():
        tables += [table] * (len(requests) if isinstance(requests, list) else len(requests["Keys"]))
    if not tables and "TableName" in body:
        tables = [body["TableName"]]
    return {"tables": tables, "consistent": bool(body.get("ConsistentRead"))}


def _describe(environ: dict[str, Any], body: bytes) -> dict[str, Any]:
    """Caller and operation of one request, from its headers, path and body."""
    caller = _CALLER.search(environ.get("HTTP_USER_AGENT", ""))
    scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    service = scope.group(1) if scope else "unsigned"
    record: dict[str, Any] = {"caller": caller.group(1) if caller else None}
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if target:
        operation = target.rsplit(".", 1)[-1]
        if service == "dynamodb":
            record |= _dynamodb_billing(json.loads(body or b"{}"))
    elif "form-urlencoded" in environ.get("CONTENT_TYPE", ""):
        operation = parse_qs(body.decode()).get("Action", ["?"])[0]
    elif service == "s3":
        operation = _s3_operation(environ, query)
    else:
        operation = f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}"
    return record | {"operation": f"{service}.{operation}"}


def record_requests(app: Wsgi, path: str) -> Wsgi:
    """Log one JSON line per request to ``path`` (see the module's docstring)."""
    lock = threading.Lock()
    out = open(path, "a", buffering=1)  # noqa: SIM115 - open for the server's life

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = b""
        if environ.get("HTTP_X_AMZ_TARGET") or "form-urlencoded" in environ.get("CONTENT_TYPE", ""):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            if length:  # a body without a length (chunked) is left to moto, unread
                body = environ["wsgi.input"].read(length)
                environ["wsgi.input"] = io.BytesIO(body)
        record = _describe(environ, body)
        status: list[str] = []

        def start(code: str, headers: Any, *args: Any) -> Any:
            status.append(code)
            return start_response(code, headers, *args)

        reply = list(app(environ, start))
        record["status"] = int(status[0].split()[0]) if status else 0
        record["time"] = round(time.time(), 3)
        if record["status"] == 200 and record["operation"] in _COUNTED_REPLIES:
            reply_body = json.loads(b"".join(reply) or b"{}")
            record["returned"] = reply_body.get("Count", len(reply_body.get("Messages", [])))
        with lock:
            out.write(json.dumps(record) + "\n")
        return reply

    return serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    app: Wsgi = one_dynamodb_call_at_a_time(DomainDispatcherApplication(create_backend_app))
    request_log = os.environ.get("CONVEYOR_MOTO_REQUEST_LOG")
    if request_log:
        app = record_requests(app, request_log)
    run_simple(
        args.host,
        args.port,
        app,
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
