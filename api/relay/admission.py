"""Admission at the door of every surface that starts runs: the queue's depth, and the `Idempotency-Key`
header. The rest of admission (the per-user cap, what a key names) is decided where the run is
recorded, in `domain.runs.accept`.

The queue's depth costs one ZCARD per API process at most every `QUEUE_LOOK_S`, made lazily by the
request that finds the last look too old and shared by every request, so a request pays nothing for
it. Between looks, the runs this process let in are added to the depth it saw, so a burst cannot
overshoot the cap by more than the other processes' share of one interval.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request

from api.state import AppState
from domain import keys
from domain.admission import IDEMPOTENCY_HEADER, IdempotencyKey, parse_key, request_hash

log = structlog.get_logger("switchboard.api.admission")

QUEUE_LOOK_S = 0.5


class QueueGauge:
    """How many runs are queued, as this process last saw it, plus those it let in since."""

    def __init__(self, redis: Redis, *, every_s: float = QUEUE_LOOK_S) -> None:
        self._redis = redis
        self._every_s = every_s
        self._seen = 0
        self._admitted = 0
        self._looked_at = -float("inf")

    async def depth(self) -> int:
        now = time.monotonic()
        if now - self._looked_at >= self._every_s:
            # Claimed before the look, so requests arriving meanwhile use the last depth instead of
            # looking too. A failed look keeps the last depth: an unreachable Redis is for the enqueue
            # to report, as a 503.
            self._looked_at = now
            try:
                seen = int(await self._redis.zcard(keys.QUEUE_NAME))
            except (RedisError, OSError) as exc:
                log.debug("admission.queue_unknown", error=str(exc))
            else:
                self._seen, self._admitted = seen, 0
        return self._seen + self._admitted

    def admitted(self) -> None:
        self._admitted += 1


_gauges: weakref.WeakKeyDictionary[Redis, QueueGauge] = weakref.WeakKeyDictionary()


def queue_gauge(state: AppState) -> QueueGauge:
    """The process's gauge, one per Redis client (one per API lifespan)."""
    gauge = _gauges.get(state.redis)
    if gauge is None:
        gauge = _gauges[state.redis] = QueueGauge(state.redis)
    return gauge


async def queue_full(state: AppState) -> bool:
    return await queue_gauge(state).depth() >= state.settings.max_queued_runs


def idempotency_key(request: Request, body: Any, **scope: str | None) -> IdempotencyKey | None:
    """The request's `Idempotency-Key`, with the digest of what it asks: its path, its JSON `body`, and
    `scope` (whatever else changes the request, like a conversation named in a header). 400 if the
    header is there but is no key."""
    value = request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    return IdempotencyKey(key=parse_key(value), request_hash=request_hash(path=request.url.path, body=body, **scope))
