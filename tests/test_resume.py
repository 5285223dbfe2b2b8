"""Rejoining a running answer (issue 9, sections 1 and 5): a Chat Completions stream cut at any event
goes on from another API process with `Last-Event-ID`, in the same chunk format; after the replay log
has expired, a finished run is told from what the database stored."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
import redis.asyncio as aioredis

from tests.deployment import USERS, Deployment
from tests.test_errors import ApiProcess
from tests.test_openai_wire import CHAT, MODEL, marker, stream_payloads, user

RUNS = 50


def _events(raw: bytes) -> list[tuple[str | None, str]]:
    """(id, data) of each SSE event of a raw body."""
    found: list[tuple[str | None, str]] = []
    for block in raw.decode().split("\n\n"):
        event_id = None
        data = None
        for line in block.split("\n"):
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data = line[6:]
        if data is not None:
            found.append((event_id, data))
    return found


def _text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["delta"].get("content") or "" for chunk in chunks for c in chunk["choices"] if c["delta"])


async def _cut_after(client: Any, body: dict[str, Any], events: int) -> tuple[bytes, str]:
    """Stream a completion and hang up after `events` chunks with an id; (what was read, its run id)."""
    read = b""
    async with client.stream("POST", CHAT, json={"model": MODEL, "stream": True, **body}) as response:
        run_id = response.headers["X-Run-ID"]
        async for piece in response.aiter_bytes():
            read += piece
            complete = read[: read.rfind(b"\n\n") + 2] if b"\n\n" in read else b""
            if sum(1 for event_id, _ in _events(complete) if event_id) >= events:
                return complete, run_id
    return read, run_id


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def second_api(deployment: Deployment, tmp_path_factory: Any) -> AsyncIterator[ApiProcess]:
    """Another API process on the same Redis and database: any process can serve any stream."""
    logs: Path = tmp_path_factory.mktemp("second-api")
    api = await ApiProcess.spawn(dict(deployment.env), logs / "api.log").wait_listening()
    yield api
    await api.stop()


async def test_a_stream_cut_at_any_event_goes_on_from_another_api_process(
    deployment: Deployment, second_api: ApiProcess
) -> None:
    rng = random.Random(7)
    limits = asyncio.Semaphore(10)
    headers = {"Authorization": f"Bearer {USERS['alice']}"}

    async def one(n: int) -> None:
        async with limits, deployment.http("alice") as first, second_api.http() as second:
            body = {"messages": user(f"[[tokens:24]] [[tokendelay:0.01]] resume {n} {marker()}")}
            cut_at = rng.randint(1, 20)
            before, run_id = await _cut_after(first, body, cut_at)
            seen = [(event_id, data) for event_id, data in _events(before) if event_id]
            last_id = seen[-1][0]
            completion_id = "chatcmpl-" + run_id.removeprefix("run_")
            resumed = await second.get(
                f"/v1/chat/completions/{completion_id}/stream", headers={**headers, "Last-Event-ID": str(last_id)}
            )
            assert resumed.status_code == 200, resumed.text
            first_chunks = [json.loads(data) for _, data in seen]
            rest = stream_payloads(resumed.content)
            assert all(chunk.get("id") == completion_id for chunk in first_chunks + rest), resumed.text[-600:]
            assert {chunk["created"] for chunk in first_chunks + rest} == {first_chunks[0]["created"]}
            assert not any("role" in c["delta"] for chunk in rest for c in chunk["choices"]), "a second role delta"
            finishes = [c["finish_reason"] for chunk in first_chunks + rest for c in chunk["choices"]]
            assert [reason for reason in finishes if reason] == ["stop"]
            [stored] = await deployment.query(
                "SELECT content FROM messages WHERE run_id = :id AND role = 'assistant'", id=run_id
            )
            assert _text(first_chunks) + _text(rest) == stored["content"], (cut_at, last_id)

    await asyncio.gather(*(one(n) for n in range(RUNS)))


async def test_a_finished_run_is_told_from_the_database_once_its_log_has_expired(deploy: Any) -> None:
    short = await deploy({"SWITCHBOARD_EVENT_LOG_TTL_S": "10"})
    async with short.http("alice") as client:
        async with client.stream(
            "POST", CHAT, json={"model": MODEL, "stream": True, "messages": user(f"[[reply:kept {marker()}]]")}
        ) as response:
            raw = await response.aread()
            run_id = response.headers["X-Run-ID"]
        said = _text(stream_payloads(raw))
        completion_id = "chatcmpl-" + run_id.removeprefix("run_")
        redis_key = f"switchboard:run:{run_id}:log"
        redis = aioredis.from_url(short.redis_url)
        try:
            deadline = asyncio.get_running_loop().time() + 20
            while await redis.exists(redis_key):
                assert asyncio.get_running_loop().time() < deadline, "the replay log did not expire"
                await asyncio.sleep(0.2)
        finally:
            await redis.aclose()
        resumed = await client.get(f"/v1/chat/completions/{completion_id}/stream")
        events = await client.get(f"/v1/runs/{run_id}/events")
    assert resumed.status_code == 200, resumed.text
    chunks = stream_payloads(resumed.content)
    assert _text(chunks) == said
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    kinds = [data for event_id, data in _events(events.content)]
    assert [json.loads(data)["type"] for data in kinds] == ["run.started", "text.delta", "run.completed"]


async def test_resuming_asks_for_the_callers_own_completion_and_a_real_event_number(deployment: Deployment) -> None:
    async with deployment.http("alice") as client:
        done = await client.post(CHAT, json={"model": MODEL, "messages": user(f"[[reply:mine {marker()}]]")})
    completion_id = done.json()["id"]
    async with deployment.http("bob") as client:
        theirs = await client.get(f"/v1/chat/completions/{completion_id}/stream")
        nonsense = await client.get("/v1/chat/completions/not-a-completion/stream")
    async with deployment.http("alice") as client:
        bad = await client.get(f"/v1/chat/completions/{completion_id}/stream", headers={"Last-Event-ID": "twelve"})
    assert theirs.status_code == nonsense.status_code == 404
    assert bad.status_code == 400
