"""Publishing a run's events, and reading back its replay log.

Each event is appended to a bounded, expiring log and published on the run's channel by one Lua
script, so the two can never disagree on order, and a reader that subscribed before the job was
enqueued sees every event either live or in the log.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from domain import keys
from domain.events import RunEvent, decode_event, encode_event

# KEYS: seq counter, log list, channel. ARGV: event JSON without seq, max log length, ttl seconds.
# The JSON object is spliced rather than decoded: cjson would reorder and re-encode every event.
_PUBLISH_SCRIPT = """
local seq = redis.call('INCR', KEYS[1])
local message = '{"seq":' .. seq .. ',' .. string.sub(ARGV[1], 2)
redis.call('RPUSH', KEYS[2], message)
if seq % 64 == 1 then
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
redis.call('PUBLISH', KEYS[3], message)
return seq
"""


class EventLog:
    """Appends and reads one Redis-backed log per run."""

    def __init__(self, redis: Redis, *, max_events: int, ttl_s: int) -> None:
        self._redis = redis
        self._max_events = max_events
        self._ttl_s = ttl_s
        self._script = redis.register_script(_PUBLISH_SCRIPT)

    async def publish_many(self, events: Sequence[RunEvent]) -> None:
        """Publish in order, in one round trip.

        EVALSHA is queued directly: redis-py's script objects would ask SCRIPT EXISTS before every
        pipeline, a second round trip for nothing. A server that lost its scripts (a restart) answers
        NOSCRIPT to every command of the batch, so loading the script and sending again is safe.
        """
        for attempt in range(2):
            async with self._redis.pipeline(transaction=False) as pipe:
                for event in events:
                    run_id = event.run_id
                    pipe.evalsha(
                        self._script.sha,
                        3,
                        keys.run_seq(run_id),
                        keys.run_log(run_id),
                        keys.run_channel(run_id),
                        encode_event(event),
                        str(self._max_events),
                        str(self._ttl_s),
                    )
                try:
                    await pipe.execute()
                    return
                except NoScriptError:
                    if attempt:
                        raise
            await self._redis.script_load(_PUBLISH_SCRIPT)

    async def read(self, run_id: str, *, after_seq: int = 0) -> list[RunEvent]:
        raw: list[bytes] = await self._redis.lrange(keys.run_log(run_id), 0, -1)  # type: ignore[misc]
        events = [decode_event(item) for item in raw]
        return [event for event in events if event.seq > after_seq]
