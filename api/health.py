"""Liveness and readiness, without authentication, for orchestrators and load balancers."""

from __future__ import annotations

import asyncio

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.state import AppState
from domain.database import ping
from domain.errors import ServiceUnavailable

CHECK_TIMEOUT_S = 2.0


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state: AppState = request.state.app
    checks = {"database": "ok", "redis": "ok"}
    try:
        await asyncio.wait_for(ping(state.db_engine), CHECK_TIMEOUT_S)
    except (ServiceUnavailable, TimeoutError, OSError):
        checks["database"] = "unreachable"
    try:
        await asyncio.wait_for(state.redis.ping(), CHECK_TIMEOUT_S)
    except (RedisError, TimeoutError, OSError):
        checks["redis"] = "unreachable"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse({"status": "ready" if ready else "unavailable", **checks}, status_code=200 if ready else 503)
