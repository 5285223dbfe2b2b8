"""Liveness and readiness, without authentication, for orchestrators and load balancers."""

from __future__ import annotations

import asyncio
import time

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.state import AppState
from domain import keys
from domain.database import ping
from domain.errors import ServiceUnavailable

CHECK_TIMEOUT_S = 2.0


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the database and Redis answer and at least one worker has reported in within a lease.

    The body names what is missing (`database`, `redis`, `workers`), so an operator knows where to look.
    """
    state: AppState = request.state.app
    checks = {"database": "ok", "redis": "ok", "workers": "ok"}
    try:
        await asyncio.wait_for(ping(state.db_engine), CHECK_TIMEOUT_S)
    except (ServiceUnavailable, TimeoutError, OSError):
        checks["database"] = "unreachable"
    try:
        fresh_since = time.time() - state.settings.run_lease_s
        live = await asyncio.wait_for(state.redis.zcount(keys.WORKERS, fresh_since, "+inf"), CHECK_TIMEOUT_S)
        if not live:
            checks["workers"] = "none alive"
    except (RedisError, TimeoutError, OSError):
        checks["redis"] = "unreachable"
        checks["workers"] = "unknown"
    missing = [name for name, value in checks.items() if value != "ok"]
    if not missing:
        return JSONResponse({"status": "ready", **checks})
    return JSONResponse(
        {"status": "unavailable", **checks, "missing": missing}, status_code=503, headers={"Retry-After": "5"}
    )
