"""`GET /metrics`: this API process's Prometheus metrics, open unless `SWITCHBOARD_METRICS_TOKEN` is set.

The queue's depth and its oldest run's age are looked at when Prometheus asks, in one round trip to
Redis, so no request pays for them.
"""

from __future__ import annotations

import hmac
import time

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.errors import error_body
from api.state import AppState
from domain import keys
from domain.metrics import CONTENT_TYPE, ApiMetrics

METRICS_PATH = "/metrics"


async def metrics(request: Request) -> Response:
    state: AppState = request.state.app
    token = state.settings.metrics_token
    if token is not None and not _bearer_matches(request, token.get_secret_value()):
        return JSONResponse(
            error_body("this endpoint needs the metrics token", type_="authentication_error", code="invalid_api_key"),
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    await _look_at_the_queue(state)
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE)


def _bearer_matches(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


async def _look_at_the_queue(state: AppState) -> None:
    meter: ApiMetrics = state.metrics
    try:
        async with state.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.QUEUE_NAME)
            # arq scores a job with the time it may run from: its enqueue, in milliseconds.
            pipe.zrange(keys.QUEUE_NAME, 0, 0, withscores=True)
            depth, oldest = await pipe.execute()
    except (RedisError, OSError):
        # The gauges keep their last values; the scrape still answers with everything else.
        meter.dependency_errors.labels("redis").inc()
        return
    meter.queue_depth.set(int(depth))
    meter.queue_oldest_age_s.set(max(0.0, time.time() - oldest[0][1] / 1000) if oldest else 0.0)
