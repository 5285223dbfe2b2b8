"""The path of a run's events from the worker to the client, and what survives a client going away.

Events are published by the worker into a per-run replay log and a pub/sub channel; each API process
listens on one shared pub/sub connection and relays events as SSE. Jobs reach an idle worker by a wake
token rather than by its poll.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import psutil
import pytest_asyncio
import redis.asyncio as aioredis

from api.relay.enqueue import JobEnqueuer
from domain import keys
from domain.job_codec import CHAT_JOB, serialize_job
from tests.deployment import Deployment
from tests.fake_llm import FakeLLM

DEFAULT_EVENT_LOG_TTL_S = 3600


def marker() -> str:
    return uuid.uuid4().hex[:12]


def body(text: str, *, stream: bool = True) -> dict[str, Any]:
    return {"model": "assistant", "messages": [{"role": "user", "content": text}], "stream": stream}


def content_of(data: str) -> str:
    chunk = json.loads(data)
    return "".join(choice["delta"].get("content") or "" for choice in chunk.get("choices", []))


async def data_lines(response: httpx2.Response) -> AsyncIterator[str]:
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            yield line.removeprefix("data:").strip()


async def assistant_rows(running: Deployment, who: str, key: str) -> list[dict[str, Any]]:
    return [row for row in await running.messages(who, key) if row["role"] == "assistant"]


async def wait_for_assistant(running: Deployment, who: str, key: str, timeout_s: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await assistant_rows(running, who, key)
        if rows or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------ (a) the client goes away


async def test_the_answer_is_stored_when_the_client_disconnects_mid_stream(deployment: Deployment) -> None:
    m = marker()
    key = f"disconnect-{m}"
    text = f"a long answer {m} that keeps streaming after the client has gone away. " * 3
    received = []
    # Leaving the stream early closes the connection mid-stream.
    async with (
        deployment.http("alice") as client,
        client.stream(
            "POST",
            "/v1/chat/completions",
            json=body(f"[[reply:{text}]] [[tokendelay:0.05]]"),
            headers={"X-Conversation-ID": key},
        ) as response,
    ):
        assert response.status_code == 200
        async for data in data_lines(response):
            piece = content_of(data)
            if piece:
                received.append(piece)
            if len(received) == 2:
                break
    assert "".join(received) != text
    assert await assistant_rows(deployment, "alice", key) == [], "the run cannot have finished yet"

    rows = await wait_for_assistant(deployment, "alice", key)
    assert [row["content"] for row in rows] == [text]
    [run] = await deployment.query("SELECT status FROM runs WHERE id = :id", id=rows[0]["run_id"])
    assert run["status"] == "succeeded"


# ------------------------------------------------------------------ (b) one subscriber connection per API process


def _redis_client_ports(process: psutil.Process, redis_port: int) -> set[int]:
    return {
        conn.laddr.port
        for conn in process.net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == redis_port and conn.status == psutil.CONN_ESTABLISHED
    }


def _in_pubsub_mode(client: dict[str, Any]) -> bool:
    return (
        int(client.get("sub", 0)) > 0
        or int(client.get("psub", 0)) > 0
        or int(client.get("ssub", 0)) > 0
        or client.get("cmd") in ("subscribe", "psubscribe", "ssubscribe")
    )


async def test_concurrent_streams_share_one_subscriber_connection(deployment: Deployment) -> None:
    m = marker()
    streams = 20
    texts = [f"stream {i} of {m} says {'abcdefghij'[i % 10] * 8} " * 4 for i in range(streams)]
    started = [asyncio.Event() for _ in range(streams)]
    release = asyncio.Event()

    async def run_one(client: httpx2.AsyncClient, i: int) -> tuple[str, bool]:
        pieces: list[str] = []
        done = False
        async with client.stream(
            "POST",
            "/v1/chat/completions",
            json=body(f"[[reply:{texts[i]}]] [[tokendelay:0.1]]"),
            headers={"X-Conversation-ID": f"fanout-{m}-{i}"},
        ) as response:
            assert response.status_code == 200
            async for data in data_lines(response):
                if data == "[DONE]":
                    done = True
                    break
                piece = content_of(data)
                if piece:
                    pieces.append(piece)
                    if not started[i].is_set():
                        started[i].set()
                        await release.wait()
        return "".join(pieces), done

    async with deployment.http("alice") as client:
        tasks = [asyncio.create_task(run_one(client, i)) for i in range(streams)]
        try:
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in started)), 30)
            open_streams = sum(not task.done() for task in tasks)
            assert open_streams == streams

            redis = aioredis.from_url(deployment.redis_url)
            try:
                clients: list[dict[str, Any]] = await redis.client_list()
            finally:
                await redis.aclose()
            # Whose connection is whose: the processes' own sockets to Redis, by local port.
            redis_port = int(deployment.redis_url.rsplit(":", 1)[1].split("/", 1)[0])
            assert deployment.api is not None
            api_ports = _redis_client_ports(psutil.Process(deployment.api.pid), redis_port)
            worker_ports: set[int] = set()
            for worker in deployment.workers:
                worker_ports |= _redis_client_ports(psutil.Process(worker.pid), redis_port)
        finally:
            release.set()
            results = await asyncio.gather(*tasks)

    assert api_ports and worker_ports

    def port_of(client: dict[str, Any]) -> int:
        return int(client["addr"].rsplit(":", 1)[1])

    subscribers = [client for client in clients if _in_pubsub_mode(client)]
    api_subscribers = [client for client in subscribers if port_of(client) in api_ports]
    worker_subscribers = [client for client in subscribers if port_of(client) in worker_ports]
    assert len(api_subscribers) == 1, api_subscribers
    # Each worker listens on one connection, to one channel (cancel requests), whatever its load.
    assert len(worker_subscribers) == len(deployment.workers), worker_subscribers
    assert all(int(client["sub"]) == 1 for client in worker_subscribers), worker_subscribers
    # The one connection carries all twenty runs' channels (and the hub's own).
    assert int(api_subscribers[0]["sub"]) >= streams

    for i, (text, done) in enumerate(results):
        assert done, f"stream {i} did not end with [DONE]"
        assert text == texts[i], f"stream {i} got someone else's text or lost some"


# ------------------------------------------------------------------ (c) dispatch without the poll gap


# The idle worker's poll runs this seldom: a job that waited for it would outlast the test's timeout,
# so one that starts at all was started by its wake token.
POLL_DELAY_S = 600
# How long a request may take before the test gives up on it: a hang guard, far below the poll delay.
HANG_GUARD_S = 30


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def slow_poll(postgres_url: str, redis_url: str, fake_llm: FakeLLM) -> AsyncIterator[Deployment]:
    running = await Deployment(
        database=postgres_url,
        redis_url=redis_url,
        llm_base_url=fake_llm.base_url,
        # No shutdown grace: an idle worker otherwise lingers up to a poll delay after SIGTERM at teardown.
        env={"SWITCHBOARD_WORKER_POLL_DELAY_S": str(POLL_DELAY_S), "SWITCHBOARD_WORKER_GRACE_S": "0"},
    ).start()
    yield running
    await running.stop()


async def wake_list_state(running: Deployment) -> tuple[int, int]:
    """(workers of this deployment blocked on the wake list, tokens waiting in it)."""
    db = int(running.redis_url.rsplit("/", 1)[1])
    redis = aioredis.from_url(running.redis_url)
    try:
        clients: list[dict[str, Any]] = await redis.client_list()
        tokens = int(await redis.llen(keys.WAKE_LIST))
    finally:
        await redis.aclose()
    blocked = [
        client
        for client in clients
        if int(client.get("db", -1)) == db and client.get("cmd") == "blpop" and "b" in str(client.get("flags", ""))
    ]
    return len(blocked), tokens


async def wait_until_idle(running: Deployment, timeout_s: float = HANG_GUARD_S) -> None:
    """Until the worker is back to waiting for a token, with none left over."""
    deadline = time.monotonic() + timeout_s
    while (state := await wake_list_state(running)) != (1, 0):
        assert time.monotonic() < deadline, f"(blocked workers, tokens) is {state}, not (1, 0)"
        await asyncio.sleep(0.02)


async def test_non_streaming_requests_in_a_row_do_not_wait_for_the_poll(slow_poll: Deployment) -> None:
    client = slow_poll.openai("bob")
    m = marker()
    await wait_until_idle(slow_poll)
    for i in range(10):
        reply = await asyncio.wait_for(
            client.chat.completions.create(
                model="assistant", messages=[{"role": "user", "content": f"[[reply:ok {i} {m}]]"}]
            ),
            HANG_GUARD_S,
        )
        assert reply.choices[0].message.content == f"ok {i} {m}"
    await wait_until_idle(slow_poll)


async def test_an_idle_worker_is_woken_rather_than_polling(slow_poll: Deployment) -> None:
    client = slow_poll.openai()
    m = marker()
    for i in range(3):
        await wait_until_idle(slow_poll)  # the worker waits for work: only a token can start this job
        reply = await asyncio.wait_for(
            client.chat.completions.create(
                model="assistant", messages=[{"role": "user", "content": f"[[reply:woken {i} {m}]]"}]
            ),
            HANG_GUARD_S,
        )
        assert reply.choices[0].message.content == f"woken {i} {m}"

    # A burst: every job is picked up by its own token, none waits for the next poll.
    await wait_until_idle(slow_poll)
    replies = await asyncio.wait_for(
        asyncio.gather(
            *(
                client.chat.completions.create(
                    model="assistant", messages=[{"role": "user", "content": f"[[reply:burst {i} {m}]]"}]
                )
                for i in range(5)
            )
        ),
        HANG_GUARD_S,
    )
    assert [r.choices[0].message.content for r in replies] == [f"burst {i} {m}" for i in range(5)]
    # Every token was taken (one per job), and the worker waits for the next.
    await wait_until_idle(slow_poll)


# ------------------------------------------------------------------ (d) the replay log


async def _stream_to_end(running: Deployment, text: str, key: str, who: str = "alice") -> str:
    pieces = []
    async with (
        running.http(who) as client,
        client.stream("POST", "/v1/chat/completions", json=body(text), headers={"X-Conversation-ID": key}) as response,
    ):
        assert response.status_code == 200
        async for data in data_lines(response):
            if data == "[DONE]":
                break
            pieces.append(content_of(data))
    return "".join(pieces)


async def test_every_event_carries_its_run_an_increasing_seq_and_its_attempt(deployment: Deployment) -> None:
    m = marker()
    key = f"replay-{m}"
    text = f"replayable answer {m} in many small pieces"
    assert await _stream_to_end(deployment, f"[[reply:{text}]] [[tokendelay:0.01]]", key) == text
    [reply] = await assistant_rows(deployment, "alice", key)
    run_id = reply["run_id"]

    redis = aioredis.from_url(deployment.redis_url)
    try:
        raw = await redis.lrange(f"switchboard:run:{run_id}:log", 0, -1)
        log_ttl = await redis.ttl(f"switchboard:run:{run_id}:log")
        seq_ttl = await redis.ttl(f"switchboard:run:{run_id}:seq")
    finally:
        await redis.aclose()
    events = [json.loads(item) for item in raw]
    assert len(events) >= 4  # started, at least two text pieces, completed
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert {event["run_id"] for event in events} == {run_id}
    assert {event["attempt"] for event in events} == {1}
    assert events[0]["type"] == "run.started"
    assert events[-1]["type"] == "run.completed"
    assert sum(event["type"] in ("run.completed", "run.failed") for event in events) == 1
    assert "".join(event["text"] for event in events if event["type"] == "text.delta") == text
    assert 0 < log_ttl <= DEFAULT_EVENT_LOG_TTL_S
    assert 0 < seq_ttl <= DEFAULT_EVENT_LOG_TTL_S


# ------------------------------------------------------------------ (e) a job delivered twice


async def test_a_duplicate_delivery_of_a_finished_run_writes_nothing(deployment: Deployment, fake_llm: FakeLLM) -> None:
    m = marker()
    key = f"duplicate-{m}"
    text = f"answered once {m}"
    assert await _stream_to_end(deployment, f"[[reply:{text}]]", key) == text
    [reply] = await assistant_rows(deployment, "alice", key)
    run_id = reply["run_id"]
    [before] = await deployment.query("SELECT * FROM runs WHERE id = :id", id=run_id)
    assert before["status"] == "succeeded"

    redis = aioredis.from_url(deployment.redis_url)
    try:
        log_key = f"switchboard:run:{run_id}:log"
        events_before = await redis.llen(log_key)
        payload = {"run_id": run_id}
        enqueuer = JobEnqueuer(redis, serializer=serialize_job)
        # Delivered again, under its own id and under another, as a redelivery could be.
        assert await enqueuer.enqueue(CHAT_JOB, job_id=run_id, payload=payload) is True
        assert await enqueuer.enqueue(CHAT_JOB, job_id=f"dup_{run_id}", payload=payload) is True
        deadline = time.monotonic() + 15
        while await redis.llen(log_key) < events_before + 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        while await redis.zcard(keys.QUEUE_NAME) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        events_after = [json.loads(item) for item in await redis.lrange(log_key, events_before, -1)]
    finally:
        await redis.aclose()

    [after] = await deployment.query("SELECT * FROM runs WHERE id = :id", id=run_id)
    assert after == before
    rows = await deployment.query("SELECT role, content FROM messages WHERE run_id = :id ORDER BY id", id=run_id)
    assert [(row["role"], row["content"]) for row in rows] == [("user", f"[[reply:{text}]]"), ("assistant", text)]
    assert sum(text in json.dumps(request["messages"]) for request in fake_llm.requests) == 1
    # Each duplicate only repeats how the run ended, for anyone still listening.
    assert [event["type"] for event in events_after] == ["run.completed", "run.completed"]


async def test_an_unreadable_job_is_dropped_and_the_worker_goes_on(deployment: Deployment) -> None:
    """Whoever can write to Redis can put anything in the queue: the worker says so and carries on."""
    job_id = f"garbage_{marker()}"
    redis = aioredis.from_url(deployment.redis_url)
    try:
        await redis.set(f"arq:job:{job_id}", b"\x80 not json", px=60_000)
        await redis.zadd(keys.QUEUE_NAME, {job_id: int(time.time() * 1000)})
        await redis.rpush(keys.WAKE_LIST, job_id)
        deadline = time.monotonic() + 15
        while await redis.zscore(keys.QUEUE_NAME, job_id) is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await redis.zscore(keys.QUEUE_NAME, job_id) is None
        assert await redis.exists(f"arq:job:{job_id}", f"arq:in-progress:{job_id}") == 0
    finally:
        await redis.aclose()
    assert any("worker.job_unreadable" in deployment.worker_log(worker) for worker in deployment.workers)
    m = marker()
    assert await _stream_to_end(deployment, f"[[reply:still here {m}]]", f"after-garbage-{m}") == f"still here {m}"
