"""The Starlette application: one package per surface, each mounted here, and a lifespan that owns the pools."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Mount, Route

from api import chatkit, openai, openapi, responses, runs_api, todo, web
from api.auth import Authenticator
from api.errors import handle_http_exception, handle_switchboard_error, handle_unexpected
from api.health import healthz, readyz
from api.mcp import MCP_PATH, McpEndpoint
from api.metrics import METRICS_PATH, metrics
from api.relay.enqueue import JobEnqueuer
from api.relay.event_hub import RunEventHub
from api.relay.queue_gauge import QueueGauge
from api.request_id import RequestIdMiddleware
from api.state import AppState, InflightRuns
from domain import tracing
from domain.assistant_catalogue import load_catalogue
from domain.database import create_engine
from domain.errors import SwitchboardError
from domain.event_log import EventLog
from domain.job_codec import serialize_job
from domain.metrics import ApiMetrics
from domain.settings import Settings


def create_app(settings: Settings) -> Starlette:
    # Read and checked before anything starts: a mistake in the assistants file stops the API here.
    assistants = load_catalogue(settings)
    mcp = McpEndpoint(settings)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, AppState]]:
        db_engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
        redis = Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
        hub = RunEventHub(settings.redis_url)
        await hub.start()
        state = AppState(
            settings=settings,
            db_engine=db_engine,
            redis=redis,
            hub=hub,
            event_log=EventLog(redis, max_events=settings.event_log_max, ttl_s=settings.event_log_ttl_s),
            enqueuer=JobEnqueuer(redis, serializer=serialize_job),
            authenticator=Authenticator(settings),
            queue=QueueGauge(redis),
            inflight=InflightRuns(limit=settings.max_inflight_runs),
            assistants=assistants,
            metrics=ApiMetrics(),
        )
        try:
            async with mcp.serving(db_engine=db_engine):
                yield {"app": state}
        finally:
            await hub.stop()
            await redis.aclose()
            await db_engine.dispose()

    return Starlette(
        routes=_routes(mcp),
        middleware=_middleware(settings),
        exception_handlers={
            SwitchboardError: handle_switchboard_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )


def _routes(mcp: McpEndpoint) -> list[BaseRoute]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route(METRICS_PATH, metrics, methods=["GET"]),
        # One Mount for `/v1`: a second would never be reached, the first matches every /v1 path.
        Mount("/v1", routes=[*openai.routes, *responses.routes, *runs_api.routes]),
        Mount("/api", routes=todo.routes),
        # Exact paths, as their clients call them: a Mount would answer `/chatkit` with a redirect.
        *chatkit.routes(),
        Route(MCP_PATH, mcp),
        *openapi.routes,
        *web.routes,
    ]


def _middleware(settings: Settings) -> list[Middleware]:
    middleware = [Middleware(RequestIdMiddleware)]
    provider = tracing.setup(settings, service=tracing.API_SERVICE)
    if provider is not None:
        from api.tracing import tracing_middleware  # OpenTelemetry's instrumentation, loaded only when used

        # Inside the request id's middleware, so the request's span carries its id.
        middleware.append(tracing_middleware(provider))
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID", "X-Conversation-ID", "Last-Event-ID"],
                expose_headers=["X-Request-ID", "X-Conversation-ID", "X-Run-ID"],
            )
        )
    return middleware
