"""``conveyor status``, ``files``, ``file``, ``resend``, ``redrive``, ``source``,
``poll``, ``plan``:
readable tables by default, ``--json`` for scripts, exit codes from
``conveyor_cli.client``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from conveyor_cli.client import EXIT_CONFLICT, ApiClient, ApiError

ApiUrl = Annotated[
    str, typer.Option("--api-url", envvar="CONVEYOR_API_URL", help="The API's address")
]
ApiKey = Annotated[
    str | None,
    typer.Option("--api-key", envvar="CONVEYOR_API_KEY", help="An API key", show_default=False),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON")]
Reason = Annotated[str | None, typer.Option("--reason", "-r", help="Why (recorded)")]

DEFAULT_URL = "http://127.0.0.1:8080"
_console = Console()


def _run(action: Callable[[], Any], as_json: bool, show: Callable[[Any], None]) -> Any:
    try:
        result = action()
    except ApiError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        show(result)
    return result


def _table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    _console.print(table)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def _show_health(rows: list[dict[str, Any]]) -> None:
    _table(
        "Routes",
        ["client", "route", "to", "last delivery", "oldest waiting", "failed 24h", "dead letters"],
        (
            [
                r["clientId"],
                r["routeName"],
                r["destinationType"],
                r.get("lastDeliveryAt"),
                _age(r.get("oldestUnprocessedSeconds")),
                r["failedLast24H"],
                r.get("deadLetters"),
            ]
            for r in rows
        ),
    )


def _show_queues(rows: list[dict[str, Any]]) -> None:
    _table(
        "Queues",
        ["queue", "waiting", "in flight", "delayed", "dead letters"],
        (
            [q["name"], q["visible"], q["inFlight"], q["delayed"], q.get("deadLetters")]
            for q in rows
        ),
    )


def _show_files(page: dict[str, Any]) -> None:
    _table(
        "Files (newest first)",
        ["when", "client", "file", "status", "tries", "file id", "error"],
        (
            [
                f["timestamp"],
                f["clientId"],
                f["fileName"],
                f["status"],
                f["sendAttempts"],
                f"{f['clientId']}/{f['contentId']}",
                (f.get("lastError") or "")[:60],
            ]
            for f in page["items"]
        ),
    )
    if page.get("nextCursor"):
        typer.echo(f"more: --cursor {page['nextCursor']}")


def _show_received(page: dict[str, Any]) -> None:
    _table(
        "Files received (newest first)",
        ["stored", "source", "path", "size", "sha256", "s3"],
        (
            [f["storedAt"], f["source"], f["path"], f["size"], f["sha256"][:16], f["uri"]]
            for f in page["items"]
        ),
    )
    if page.get("nextCursor"):
        typer.echo(f"more: --cursor {page['nextCursor']}")


def _show_sources(rows: list[dict[str, Any]]) -> None:
    _table(
        "Sources",
        ["source", "protocol", "for", "last good poll", "oldest waiting", "failing 24h", "dlq"],
        (
            [
                r["sourceId"],
                r["protocol"],
                r["audience"],
                r.get("lastGoodPollAt"),
                _age(r.get("oldestUnprocessedSeconds")),
                r["failedLast24H"],
                r.get("deadLetters"),
            ]
            for r in rows
        ),
    )


def _show_file(detail: dict[str, Any]) -> None:
    fields = [
        ("file", detail["fileName"]),
        ("status", detail["status"]),
        ("client", detail["clientId"]),
        ("checksum", detail["contentId"]),
        ("size", detail.get("size")),
        ("job", detail["jobId"]),
        ("from", detail["sourceUri"]),
        ("to", detail.get("destinationUri")),
        ("verified by", detail.get("verifiedBy")),
        ("attempts", detail["sendAttempts"]),
        ("last error", detail.get("lastError")),
    ]
    if detail.get("progress"):
        progress = detail["progress"]
        fields.append(("in flight", f"{progress['bytesDone']} bytes ({progress.get('percent')}%)"))
    _table("File", ["", ""], fields)
    _table(
        "History",
        ["at", "outcome", "verified by", "error"],
        ([a["at"], a["outcome"], a.get("verifiedBy"), a.get("error")] for a in detail["attempts"]),
    )
    if detail["actions"]:
        _table(
            "Operator actions",
            ["at", "action", "by", "reason", "outcome"],
            (
                [a["at"], a["kind"], a["by"], a.get("reason"), a["outcome"]]
                for a in detail["actions"]
            ),
        )


def _show_result(result: dict[str, Any]) -> None:
    if result.get("dryRun"):
        typer.echo(f"dry run: {result['matched']} match, {result['resent']} would be resent")
        return
    typer.echo(f"resent {result['resent']} of {result['matched']}: {', '.join(result['jobs'])}")
    for line in result.get("skipped", []):
        typer.echo(f"  skipped {line}")


def _split_file_id(file_id: str) -> tuple[str, str]:
    client_id, _, content_id = file_id.partition("/")
    if not content_id:
        typer.echo("error: a file id is CLIENT/CHECKSUM, as `conveyor files` shows", err=True)
        raise typer.Exit(2)
    return client_id, content_id


def _show_overview(result: dict[str, Any]) -> None:
    _show_health(result["clients"])
    if result.get("sources"):
        _show_sources(result["sources"])
    _show_queues(result["queues"])


def _show_client(result: dict[str, Any]) -> None:
    _show_health([result["client"]])
    _table(
        "Recent jobs",
        ["job", "status", "started", "total", "ok", "failed"],
        (
            [j["jobId"], j["status"], j["startedAt"], j["total"], j["succeeded"], j["failed"]]
            for j in result["jobs"]
        ),
    )


def status(
    client_id: Annotated[str | None, typer.Argument(help="One client's route")] = None,
    url: ApiUrl = DEFAULT_URL,
    key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Every route's and source's health and every queue's depth, or one
    client's with its recent jobs."""
    api = ApiClient(url, key)
    if client_id is None:
        overview = lambda: {  # noqa: E731
            "clients": api.get("/clients"),
            "sources": api.get("/sources"),
            "queues": api.get("/queues"),
        }
        _run(overview, as_json, _show_overview)
        return
    one = lambda: {  # noqa: E731
        "client": api.get(f"/clients/{client_id}"),
        "jobs": api.get("/jobs", {"client": client_id, "limit": 10}),
    }
    _run(one, as_json, _show_client)


def files(
    client: Annotated[str | None, typer.Option(help="Client id")] = None,
    status: Annotated[str | None, typer.Option(help="processing, success or fail")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 time")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 time")] = None,
    name: Annotated[str | None, typer.Option(help="Part of the file name")] = None,
    checksum: Annotated[str | None, typer.Option(help="SHA-256 of the content")] = None,
    limit: Annotated[int, typer.Option(help="Files per page")] = 50,
    cursor: Annotated[str | None, typer.Option(help="From a previous page")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Every matching file as CSV")] = False,
    received: Annotated[
        bool, typer.Option("--received", help="Files received from provider sources")
    ] = False,
    source: Annotated[str | None, typer.Option(help="With --received: one source")] = None,
    url: ApiUrl = DEFAULT_URL,
    key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Files sent, newest first (give --client, --status or --checksum), or
    files received (--received, optionally --source and --name)."""
    api = ApiClient(url, key)
    if received or source:
        query = {"source": source, "name": name, "limit": limit, "cursor": cursor}
        _run(lambda: api.get("/received", query), as_json, _show_received)
        return
    params = {
        "client": client,
        "status": status,
        "since": since,
        "until": until,
        "name": name,
        "checksum": checksum,
    }
    if as_csv:
        _run(lambda: api.get_response("/files.csv", params).text, False, typer.echo)
        return
    _run(
        lambda: api.get("/files", {**params, "limit": limit, "cursor": cursor}),
        as_json,
        _show_files,
    )


def file(
    file_id: Annotated[str, typer.Argument(help="CLIENT/CHECKSUM, as `conveyor files` shows")],
    url: ApiUrl = DEFAULT_URL,
    key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """One file's whole history."""
    client_id, content_id = _split_file_id(file_id)
    api = ApiClient(url, key)
    _run(lambda: api.get(f"/files/{client_id}/{content_id}"), as_json, _show_file)


def resend(
    file_id: Annotated[str | None, typer.Argument(help="CLIENT/CHECKSUM of one file")] = None,
    job: Annotated[str | None, typer.Option(help="Resend every file of this job")] = None,
    client: Annotated[str | None, typer.Option(help="Filter: client id")] = None,
    status: Annotated[str | None, typer.Option(help="Filter: success or fail")] = None,
    since: Annotated[str | None, typer.Option(help="Filter: ISO 8601 time")] = None,
    until: Annotated[str | None, typer.Option(help="Filter: ISO 8601 time")] = None,
    name: Annotated[str | None, typer.Option(help="Filter: part of the file name")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Resend by filter (else: count only)")] = False,
    reason: Reason = None,
    url: ApiUrl = DEFAULT_URL,
    key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Send files again: one (FILE_ID), a job's (--job), or by filter (a dry run
    that counts, unless --yes). Exits 1 if nothing could be resent."""
    api = ApiClient(url, key)
    body: dict[str, Any] = {"reason": reason}
    if file_id is not None:
        client_id, content_id = _split_file_id(file_id)
        call = lambda: api.post(f"/files/{client_id}/{content_id}/resend", body)  # noqa: E731
    elif job is not None:
        call = lambda: api.post(f"/jobs/{job}/resend", body)  # noqa: E731
    elif client or status or name:
        filters = {"client": client, "status": status, "since": since, "until": until}
        body |= {**filters, "name": name, "dryRun": not yes}
        call = lambda: api.post("/files/resend", body)  # noqa: E731
    else:
        typer.echo("error: give a FILE_ID, --job, or a filter (--client/--status/--name)", err=True)
        raise typer.Exit(2)
    result = _run(call, as_json, _show_result)
    if not result.get("dryRun") and not result.get("resent"):
        raise typer.Exit(EXIT_CONFLICT)


def redrive(
    queue: Annotated[str, typer.Argument(help="The queue whose dead letters go back to work")],
    reason: Reason = None,
    url: ApiUrl = DEFAULT_URL,
    key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Put a queue's dead letters back to work (failed transfers are resent)."""
    api = ApiClient(url, key)
    _run(
        lambda: api.post(f"/queues/{queue}/redrive", {"reason": reason}),
        as_json,
        lambda r: typer.echo(
            f"moved {r['moved']}, resent {r['resent']}, unreadable moved {r['unreadableMoved']}"
        ),
    )


source_app = typer.Typer(help="Provider sources.", no_args_is_help=True)
SourceId = Annotated[str, typer.Argument(help="The source's id in the routes file")]


def _show_check(r: dict[str, Any]) -> None:
    if r["ok"]:
        typer.echo(f"ok: {r['files']} file(s)" + (f" ({r['note']})" if r.get("note") else ""))
        for path in r.get("sample", []):
            typer.echo(f"  {path}")
        return
    typer.echo(f"failed at {r['failedAt']}: {r.get('reason')}")


def _show_test(r: dict[str, Any]) -> None:
    typer.echo(f"{r['status']}: {r['message']}" + (f"\nhint: {r['hint']}" if r.get("hint") else ""))


@source_app.command("check")
def source_check(
    source_id: SourceId,
    reason: Reason = None,
    url: ApiUrl = DEFAULT_URL,
    key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Connect, sign in and list a source's server: what it found, or exactly
    where it failed (dns, refused, timeout, tls, host_key, login, ...)."""
    api = ApiClient(url, key)
    result = _run(
        lambda: api.post(f"/sources/{source_id}/check", {"reason": reason}), as_json, _show_check
    )
    if not result.get("ok"):
        raise typer.Exit(EXIT_CONFLICT)


@source_app.command("test")
def source_test(
    source_id: SourceId, url: ApiUrl = DEFAULT_URL, key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Test a source's connection (status, message, hint)."""
    api = ApiClient(url, key)
    result = _run(lambda: api.post(f"/sources/{source_id}/test"), as_json, _show_test)
    if not result.get("ok"):
        raise typer.Exit(EXIT_CONFLICT)


def poll(
    source_id: SourceId,
    when: Annotated[str, typer.Argument(help="now (the only choice)")] = "now",
    reason: Reason = None,
    url: ApiUrl = DEFAULT_URL,
    key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Poll a source now, whether or not its schedule says it is due."""
    if when != "now":
        typer.echo("error: `conveyor poll SOURCE now` is the only form", err=True)
        raise typer.Exit(2)
    api = ApiClient(url, key)
    _run(
        lambda: api.post(f"/sources/{source_id}/poll", {"reason": reason}),
        as_json,
        lambda r: typer.echo(f"{r['outcome']} (action {r['actionId']})"),
    )


def _show_plans(plans: list[dict[str, Any]]) -> None:
    for p in plans:
        if p.get("error"):
            typer.echo(f"{p['sourceId']}: cannot list: {p['error']}")
            continue
        _table(
            f"{p['sourceId']}: {p['listed']} listed",
            ["path", "next poll", "why", "size"],
            ([f["path"], f["action"], f["reason"], f["size"]] for f in p["files"]),
        )
        for path in p["gone"]:
            typer.echo(f"  gone from the server: {path}")


def plan(
    source_id: Annotated[str | None, typer.Argument(help="One source (default: all)")] = None,
    url: ApiUrl = DEFAULT_URL,
    key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """What the next poll would copy, skip and why; changes nothing."""
    api = ApiClient(url, key)
    result = _run(lambda: api.get("/plan", {"source": source_id}), as_json, _show_plans)
    if any(p.get("error") for p in result):
        raise typer.Exit(EXIT_CONFLICT)


def register(app: typer.Typer) -> None:
    for command in (status, files, file, resend, redrive, poll, plan):
        app.command()(command)
    app.add_typer(source_app, name="source")
