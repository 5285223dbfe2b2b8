"""The replay log and the run's channel, against a real Redis: a run's burst of events is one script
call and one message, numbered without gaps, and the sink sends at most once per interval unless
something urgent is waiting."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest_asyncio
import redis.asyncio as aioredis

from domain import keys
from domain.event_log import MAX_EVENTS_PER_CALL, EventLog, decode_published
from domain.events import RunCompleted, RunEvent, RunStarted, TextDelta
from workers.event_sink import EventSink


@pytest_asyncio.fixture(loop_scope="session")
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


def new_run() -> str:
    return f"run_{secrets.token_hex(12)}"


def delta(run: str, text: str) -> TextDelta:
    return TextDelta(run_id=run, attempt=1, text=text)


async def listen(redis: aioredis.Redis, *runs: str) -> aioredis.client.PubSub:
    pubsub = redis.pubsub()
    await pubsub.subscribe(*(keys.run_channel(run) for run in runs))
    for _ in runs:
        await pubsub.get_message(timeout=5)  # the confirmations
    return pubsub


async def published(pubsub: aioredis.client.PubSub, *, wait_s: float = 0.3) -> list[list[RunEvent]]:
    messages = []
    while (message := await pubsub.get_message(timeout=wait_s)) is not None:
        messages.append(decode_published(message["data"]))
    return messages


async def commands(redis: aioredis.Redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


async def test_a_runs_burst_is_one_message_numbered_on_from_the_last(redis: aioredis.Redis) -> None:
    run, other = new_run(), new_run()
    log = EventLog(redis, max_events=100, ttl_s=60)
    pubsub = await listen(redis, run, other)
    await log.publish_many([RunStarted(run_id=run, attempt=1)])
    await log.publish_many([delta(run, "a"), delta(other, "x"), delta(run, "b"), RunCompleted(run_id=run, attempt=1)])
    messages = await published(pubsub)
    await pubsub.aclose()

    mine = [[(event.seq, event.type) for event in batch] for batch in messages if batch[0].run_id == run]
    assert mine == [[(1, "run.started")], [(2, "text.delta"), (3, "text.delta"), (4, "run.completed")]]
    theirs = [[event.seq for event in batch] for batch in messages if batch[0].run_id == other]
    assert theirs == [[1]]
    # The log holds each event on its own, in the same order and with the same numbers.
    logged = await log.read(run)
    assert [event.seq for event in logged] == [1, 2, 3, 4]
    assert [getattr(event, "text", None) for event in logged] == [None, "a", "b", None]
    assert [event.seq for event in await log.read(run, after_seq=2)] == [3, 4]


async def test_a_burst_costs_one_script_call_per_run(redis: aioredis.Redis) -> None:
    run = new_run()
    log = EventLog(redis, max_events=100, ttl_s=60)
    await log.publish_many([RunStarted(run_id=run, attempt=1)])  # first event: the log's expiry is set
    before = await commands(redis)
    await log.publish_many([delta(run, str(n)) for n in range(10)])
    after = await commands(redis)
    used = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
    used.pop("info", None)
    assert used == {"evalsha": 1, "incrby": 1, "rpush": 1, "publish": 1}


async def test_the_log_keeps_its_bound_and_its_expiry(redis: aioredis.Redis) -> None:
    run = new_run()
    log = EventLog(redis, max_events=5, ttl_s=60)
    await log.publish_many([delta(run, str(n)) for n in range(3)])
    assert 0 < await redis.ttl(keys.run_log(run)) <= 60
    assert 0 < await redis.ttl(keys.run_seq(run)) <= 60
    await redis.persist(keys.run_log(run))
    await log.publish_many([delta(run, str(n)) for n in range(3, 70)])  # crosses seq 65: refreshed
    assert 0 < await redis.ttl(keys.run_log(run)) <= 60
    assert [event.seq for event in await log.read(run)] == [66, 67, 68, 69, 70]


async def test_a_burst_longer_than_one_call_keeps_its_order(redis: aioredis.Redis) -> None:
    run = new_run()
    log = EventLog(redis, max_events=10_000, ttl_s=60)
    count = MAX_EVENTS_PER_CALL * 2 + 7
    await log.publish_many([delta(run, str(n)) for n in range(count)])
    logged = await log.read(run)
    assert [event.seq for event in logged] == list(range(1, count + 1))
    assert [getattr(event, "text", None) for event in logged] == [str(n) for n in range(count)]


async def next_message(pubsub: aioredis.client.PubSub, *, wait_s: float) -> list[RunEvent] | None:
    message = await pubsub.get_message(timeout=wait_s)
    return None if message is None else decode_published(message["data"])


async def test_the_sink_holds_plain_events_for_an_interval_and_urgent_ones_take_them_along(
    redis: aioredis.Redis,
) -> None:
    run = new_run()
    sink = EventSink(EventLog(redis, max_events=100, ttl_s=60), interval_s=0.3)
    pubsub = await listen(redis, run)
    sink.start()
    try:
        # A run's start waits for its first text, which is urgent: one message for both.
        sink.send(RunStarted(run_id=run, attempt=1))
        assert await next_message(pubsub, wait_s=0.1) is None
        sink.send(delta(run, "a"), urgent=True)
        first = await next_message(pubsub, wait_s=0.2)
        assert first is not None
        assert [(event.seq, event.type) for event in first] == [(1, "run.started"), (2, "text.delta")]
        # Plain events alone go out once the interval is over, the run's deltas joined into one event.
        sink.send(delta(run, "b"))
        sink.send(delta(run, "c"))
        assert await next_message(pubsub, wait_s=0.1) is None
        assert await next_message(pubsub, wait_s=0.5) == [TextDelta(run_id=run, attempt=1, seq=3, text="bc")]
        # An outcome goes at once, taking what waits with it, and is waited for.
        sink.send(delta(run, "d"))
        await asyncio.wait_for(sink.deliver(RunCompleted(run_id=run, attempt=1)), 0.1)
        last = await next_message(pubsub, wait_s=0.1)
        assert last is not None and [event.seq for event in last] == [4, 5]
    finally:
        await sink.aclose()
        await pubsub.aclose()
