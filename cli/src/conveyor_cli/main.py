"""The ``conveyor`` operator command.

conveyor config validate FILE   check a routes file; every problem names its field
conveyor dev up                 run everything on the embedded local stack
conveyor dev env                the running local stack's endpoints as shell exports
conveyor dev deploy             deploy deploy/conveyor.yaml into the AWS endpoint in use
conveyor status / files / file / resend / redrive / source / poll / plan: over the API
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import aioboto3
import typer

from conveyor_cli import dev
from conveyor_cli.commands import register as register_operator_commands
from conveyor_shared.aws import CLIENT_CONFIG
from conveyor_shared.config import ConfigError, RoutesFile, load_routes
from conveyor_shared.errors import NotFound

app = typer.Typer(help="Conveyor: file delivery and provider sync.", no_args_is_help=True)
config_app = typer.Typer(help="The routes file.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(dev.app, name="dev")
register_operator_commands(app)


@config_app.command("validate")
def validate(
    file: Annotated[str, typer.Argument(help="Path or s3:// URI of the routes file")],
) -> None:
    """Check a routes file. Exits 1 and lists every problem, by field, if it is invalid."""
    try:
        routes = asyncio.run(_load(file))
    except NotFound as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except ConfigError as exc:
        typer.echo(f"{file}: invalid, {len(exc.problems)} problem(s):", err=True)
        for problem in exc.problems:
            typer.echo(f"  {problem.path}: {problem.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{file}: valid, {len(routes.routes)} route(s)")
    for route in routes.routes:
        typer.echo(
            f"  {route.client_id}  {route.pickup}  ->  {route.destination.type}  ({route.name})"
        )


async def _load(uri: str) -> RoutesFile:
    if not uri.startswith("s3://"):
        return await load_routes(str(Path(uri)))
    session: Any = aioboto3.Session()
    async with session.client("s3", config=CLIENT_CONFIG) as s3:
        return await load_routes(uri, s3)


if __name__ == "__main__":
    app()
