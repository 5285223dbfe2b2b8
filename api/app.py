"""The Starlette application: routes, middleware, error handlers, and a lifespan that owns the pools."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from api import todo_routes, web
from api.auth import Authenticator
from api.chat_completions import chat_completions
from api.chatkit_route import CHATKIT_PATH, chatkit
from api.enqueue import JobEnqueuer
from api.errors import handle_http_exception, handle_switchboard_error, handle_unexpected
from api.event_hub import RunEventHub
from api.health import healthz, readyz
from api.mcp_endpoint import MCP_PATH, McpEndpoint
from api.models_routes import get_model, list_models
from api.request_id import RequestIdMiddleware
from api.state import AppState, InflightRuns
from domain.database import create_engine, session_factory
from domain.errors import SwitchboardError
from domain.event_log import EventLog
from domain.job_codec import serialize_job
from domain.settings import Settings


def create_app(settings: Settings) -> Starlette:
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
            sessions=session_factory(db_engine),
            redis=redis,
            hub=hub,
            event_log=EventLog(redis, max_events=settings.event_log_max, ttl_s=settings.event_log_ttl_s),
            enqueuer=JobEnqueuer(redis, serializer=serialize_job),
            authenticator=Authenticator(settings),
            inflight=InflightRuns(limit=settings.max_inflight_runs),
        )
        try:
            async with mcp.serving(db_engine=db_engine):
                yield {"app": state}
        finally:
            await hub.stop()
            await redis.aclose()
            await db_engine.dispose()

    middleware = [Middleware(RequestIdMiddleware)]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID", "X-Conversation-ID"],
                expose_headers=["X-Request-ID", "X-Conversation-ID"],
            )
        )
    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route(MCP_PATH, mcp),
            Route(CHATKIT_PATH, chatkit, methods=["POST"]),
            Route("/api/me", todo_routes.me, methods=["GET"]),
            Route("/api/{user_id}/chat", todo_routes.chat, methods=["POST"]),
            Route("/api/{user_id}/tasks", todo_routes.list_tasks, methods=["GET"]),
            Route("/api/{user_id}/conversations", todo_routes.list_conversations, methods=["GET"]),
            Route(
                "/api/{user_id}/conversations/{conversation_id}/messages", todo_routes.list_messages, methods=["GET"]
            ),
            Route(
                "/api/{user_id}/conversations/{conversation_id}", todo_routes.delete_conversation, methods=["DELETE"]
            ),
            *web.routes,
        ],
        middleware=middleware,
        exception_handlers={
            SwitchboardError: handle_switchboard_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )
