"""Publishing a run's events, and reading back its replay log.

A run's events are appended to a bounded, expiring log and published on the run's channel by one
Lua script, so the two can never disagree on order, and a reader that subscribed before the job was
enqueued sees every event either live or in the log. What the channel carries is decoded by
`decode_published`: one event, or a run's batch of them.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from domain import keys
from domain.events import RunEvent, decode_event, decode_events, encode_event

# KEYS: seq counter, log list, channel. ARGV: max log length, ttl seconds, then one run's events in
# order, as JSON without seq. The JSON objects are spliced rather than decoded: cjson would reorder and
# re-encode every event. The log is refreshed (expiry) whenever a seq of 1 mod 64 goes in, and trimmed
# only once it is longer than its bound. A batch of more than one event is published as one message,
# a JSON array, so a run's burst costs one PUBLISH and one message for every API process to relay.
_PUBLISH_SCRIPT = """
local count = #ARGV - 2
local last = redis.call('INCRBY', KEYS[1], count)
local first = last - count + 1
local messages = {}
for i = 1, count do
  messages[i] = '{"seq":' .. (first + i - 1) .. ',' .. string.sub(ARGV[i + 2], 2)
end
local length = redis.call('RPUSH', KEYS[2], unpack(messages))
if length > tonumber(ARGV[1]) then
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[1]), -1)
end
if math.floor((last - 1) / 64) > math.floor((first - 2) / 64) then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
if count == 1 then
  redis.call('PUBLISH', KEYS[3], messages[1])
else
  redis.call('PUBLISH', KEYS[3], '[' .. table.concat(messages, ',') .. ']')
end
return last
"""

# Lua's unpack() has a stack limit of a few thousand values: longer bursts go in several calls.
MAX_EVENTS_PER_CALL = 500


class EventLog:
    """Appends and reads one Redis-backed log per run."""

    def __init__(self, redis: Redis, *, max_events: int, ttl_s: int) -> None:
        self._redis = redis
        self._max_events = max_events
        self._ttl_s = ttl_s
        self._script = redis.register_script(_PUBLISH_SCRIPT)

    async def publish_many(self, events: Sequence[RunEvent]) -> None:
        """Publish in order, in one round trip: one script call per run (per 500 events).

        EVALSHA is queued directly: redis-py's script objects would ask SCRIPT EXISTS before every
        pipeline, a second round trip for nothing. A server that lost its scripts (a restart) answers
        NOSCRIPT to every command of the batch, so loading the script and sending again is safe.
        """
        by_run: dict[str, list[str]] = {}
        for event in events:
            by_run.setdefault(event.run_id, []).append(encode_event(event))
        for attempt in range(2):
            async with self._redis.pipeline(transaction=False) as pipe:
                for run_id, encoded in by_run.items():
                    for start in range(0, len(encoded), MAX_EVENTS_PER_CALL):
                        pipe.evalsha(
                            self._script.sha,
                            3,
                            keys.run_seq(run_id),
                            keys.run_log(run_id),
                            keys.run_channel(run_id),
                            str(self._max_events),
                            str(self._ttl_s),
                            *encoded[start : start + MAX_EVENTS_PER_CALL],
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


def decode_published(message: bytes) -> list[RunEvent]:
    """The events of one message on a run's channel, in order."""
    if message[:1] == b"[":
        return decode_events(message)
    return [decode_event(message)]
