"""Handing a job to the workers in one round trip, and waking exactly one of them.

This writes arq's own job format (`arq.jobs.serialize_job`, arq's key prefixes), so arq workers run
it unchanged; the script only adds the wake token and does it all atomically.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from arq.constants import default_queue_name, expires_extra_ms, job_key_prefix
from arq.jobs import serialize_job
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis
from redis.exceptions import RedisError

from domain import keys, tracing
from domain.errors import RedisUnavailable
from domain.job_codec import TRACE_CONTEXT

# KEYS: job key, queue, wake list. ARGV: job bytes, expiry ms, score, job id, wake list max.
# The job is written only if no job with its id exists (SET NX), which is also the check. arq keeps no
# result of these jobs (the workers run with keep_result=0 and write none), so there is none to look for.
# RPUSH here and BLPOP in the workers make the wake list first-in, first-out: with LPUSH it would be
# a stack, and under sustained load the oldest jobs would wait until the load stopped. The list is
# trimmed only once it is past its bound (tokens nobody took while every worker was full).
_ENQUEUE_SCRIPT = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
if redis.call('RPUSH', KEYS[3], ARGV[4]) > tonumber(ARGV[5]) then
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[5]), -1)
end
return 1
"""

assert default_queue_name != keys.QUEUE_NAME  # we use a queue of our own, not arq's shared default


class JobEnqueuer:
    def __init__(self, redis: Redis, *, serializer: Callable[[Any], bytes]) -> None:
        self._script = redis.register_script(_ENQUEUE_SCRIPT)
        self._serializer = serializer

    async def enqueue(self, function: str, *, job_id: str, payload: dict[str, Any]) -> bool:
        """Returns False if a job with this id exists already."""
        if not tracing.enabled():
            return await self._enqueue(function, job_id=job_id, payload=payload)
        attributes = {"messaging.system": "redis", "messaging.operation.type": "send", "messaging.message.id": job_id}
        with tracing.tracer().start_as_current_span(
            f"enqueue {function}", kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            # The worker's span for the run is this one's child: the job carries its context.
            created = await self._enqueue(
                function, job_id=job_id, payload={**payload, TRACE_CONTEXT: tracing.trace_context()}
            )
            span.set_attribute("switchboard.job.created", created)
            return created

    async def _enqueue(self, function: str, *, job_id: str, payload: dict[str, Any]) -> bool:
        now_ms = int(time.time() * 1000)
        job = serialize_job(function, (payload,), {}, None, now_ms, serializer=self._serializer)
        try:
            created = await self._script(
                keys=[job_key_prefix + job_id, keys.QUEUE_NAME, keys.WAKE_LIST],
                args=[job, expires_extra_ms, now_ms, job_id, keys.WAKE_LIST_MAX],
            )
        except (RedisError, OSError) as exc:
            raise RedisUnavailable("Redis is unreachable") from exc
        return bool(created)
