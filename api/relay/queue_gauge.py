"""How many runs are queued, as one API process sees it, for the queue cap (`SWITCHBOARD_MAX_QUEUED_RUNS`).

The depth costs one ZCARD per API process at most every `QUEUE_LOOK_S`, made lazily by the request
that finds the last look too old and shared by every request, so a request pays nothing for it.
Between looks, the runs this process let in are added to the depth it saw, so a burst cannot
overshoot the cap by more than the other processes' share of one interval.
"""

from __future__ import annotations

import time

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from domain import keys

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
