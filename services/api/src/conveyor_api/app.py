"""The API's wiring: AWS clients opened once in the lifespan, the routers
(one module per resource, and the web page's), one problem model for errors,
the metrics refresher."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import structlog
import uvicorn
from fastapi import FastAPI

from conveyor_api.auth import KeyRing
from conveyor_api.context import ApiContext
from conveyor_api.metrics import DeliveryMetrics
from conveyor_api.problems import Problem, install_problem_handlers
from conveyor_api.routes import clients, files, jobs, queues, received, sources, system
from conveyor_api.settings import ApiSettings
from conveyor_api.web import router as web_router
from conveyor_shared.config.loader import RoutesSource
from conveyor_shared.ledger.files import FileLedger
from conveyor_shared.ledger.jobs import JobLedger
from conveyor_shared.ledger.received import ReceivedLedger
from conveyor_shared.messaging.publisher import EventPublisher
from conveyor_shared.runtime import open_clients
from conveyor_shared.secrets import SecretStore
from conveyor_shared.sync.remote import ByProtocol, installed_openers

log = structlog.get_logger("conveyor.api")


async def open_context(stack: AsyncExitStack, settings: ApiSettings) -> ApiContext:
    aws = await open_clients(stack, settings)
    names = settings.names
    secrets = SecretStore(aws.secrets)
    return ApiContext(
        settings=settings,
        aws=aws,
        files=FileLedger(aws.dynamodb, names.files_table),
        jobs=JobLedger(aws.dynamodb, names.jobs_table),
        routes=RoutesSource(settings.routes_uri, aws.s3),
        secrets=secrets,
        keys=KeyRing(aws.secrets, settings.api_keys_secret, settings.api_keys_cache_seconds),
        publisher=EventPublisher(aws.sns, await aws.topic_arn(names.events_topic, settings.region)),
        received=ReceivedLedger(aws.dynamodb, names.received_table),
        sources=ByProtocol(await installed_openers(stack, secrets)),
    )


def create_app(settings: ApiSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            app.state.conveyor = await open_context(stack, settings)
            stop = asyncio.Event()
            refresher = asyncio.create_task(app.state.metrics.run(app.state.conveyor, stop))
            log.info("service.started", stack=settings.stack)
            try:
                yield
            finally:
                stop.set()
                await refresher

    app = FastAPI(
        title="Conveyor",
        summary="Status and resend API of Conveyor's file delivery and provider sync",
        version="1",
        lifespan=lifespan,
    )
    app.state.metrics = DeliveryMetrics()
    app.state.settings = settings
    install_problem_handlers(app)
    for module in (system, clients, files, jobs, queues, sources, received):
        app.include_router(module.router)
    app.include_router(web_router)
    _add_problem_schema(app)
    return app


def _add_problem_schema(app: FastAPI) -> None:
    """Put ``Problem`` in the OpenAPI components, which every error response names."""
    build = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(problem.pop("$defs", {}))
        components["Problem"] = problem
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def run(settings: ApiSettings, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (by default: until SIGTERM or SIGINT)."""
    structlog.contextvars.bind_contextvars(service="api")
    config = uvicorn.Config(
        create_app(settings), host=settings.api_host, port=settings.api_port, log_config=None
    )
    server = uvicorn.Server(config)
    if stop is None:
        await server.serve()
        return

    async def stopper() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(stopper())
    try:
        await server.serve()
    finally:
        watcher.cancel()
