"""Admission control (issue 8, part 4), against real processes: the `Idempotency-Key` header, the
per-user cap on unfinished runs, the queue cap, and `Retry-After` on every 429.

The idempotency tests use the shared `deployment`, each with keys and conversations of its own; the
caps get deployments of their own with low limits (the queue's without a worker, so that its runs stay
queued).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import AsyncExitStack
from typing import Any

import httpx2
import openai
import pytest
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain import keys
from tests.conftest import DeployFactory
from tests.deployment import Deployment

MODEL = "assistant"
CHAT = "/v1/chat/completions"
KEY = "Idempotency-Key"


def marker() -> str:
    return uuid.uuid4().hex[:12]


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def sse_payloads(raw: str) -> list[str]:
    return [line.removeprefix("data:").strip() for line in raw.splitlines() if line.startswith("data:")]


def todo_events(raw: str) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    name = None
    for line in raw.splitlines():
        if line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:") and name is not None:
            events.append((name, json.loads(line.removeprefix("data:").strip())))
            name = None
    return events


def assert_error(response: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return dict(error)


def assert_retry_after(response: httpx2.Response) -> None:
    value = response.headers.get("Retry-After")
    assert value is not None and value.isdigit() and int(value) >= 1, dict(response.headers)


def run_of(response: httpx2.Response) -> str:
    """The run behind a chat completion, whose id is made from the run's."""
    return "run_" + str(response.json()["id"]).removeprefix("chatcmpl-")


def engine_of(deployment: Deployment) -> AsyncEngine:
    assert deployment.engine is not None
    return deployment.engine


async def keyed_runs(deployment: Deployment, user_id: str, key: str) -> list[dict[str, Any]]:
    return await deployment.query(
        "SELECT id, status, request_hash FROM runs WHERE user_id = :user AND idempotency_key = :key",
        user=user_id,
        key=key,
    )


async def stored_turns(deployment: Deployment, user_id: str, conversation: str) -> list[str]:
    """The roles of the conversation's messages, once its last run has finished."""
    await deployment.wait_for(
        "SELECT r.id FROM runs r JOIN conversations c ON c.id = r.conversation_id "
        "WHERE c.user_id = :user AND c.key = :key AND r.status = 'succeeded'",
        user=user_id,
        key=conversation,
    )
    return [message["role"] for message in await deployment.messages(user_id, conversation)]


# --------------------------------------------------------------------------- Idempotency-Key


async def test_openai_sdk_retry_gets_the_same_run(deployment: Deployment) -> None:
    key, conversation = f"sdk-{marker()}", f"conv-{marker()}"
    headers = {KEY: key, "X-Conversation-ID": conversation}
    client = deployment.openai()
    first = await client.chat.completions.create(
        model=MODEL, messages=user(f"[[reply:one answer {key}]]"), extra_headers=headers
    )
    again = await client.chat.completions.create(
        model=MODEL, messages=user(f"[[reply:one answer {key}]]"), extra_headers=headers
    )
    assert first.choices[0].message.content == f"one answer {key}"
    assert again.id == first.id
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.usage == first.usage
    assert len(await keyed_runs(deployment, "alice", key)) == 1
    assert await stored_turns(deployment, "alice", conversation) == ["user", "assistant"]

    # Streaming, with another key: the retry, made after the run finished, shows the whole answer again.
    stream_key = f"sdk-stream-{marker()}"
    texts: list[str] = []
    ids: set[str] = set()
    for _ in range(2):
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=user(f"[[reply:streamed once {stream_key}]]"),
            stream=True,
            extra_headers={KEY: stream_key, "X-Conversation-ID": conversation},
        )
        text = ""
        async for chunk in stream:
            ids.add(chunk.id)
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        texts.append(text)
    assert texts == [f"streamed once {stream_key}"] * 2
    assert len(ids) == 1
    assert len(await keyed_runs(deployment, "alice", stream_key)) == 1
    assert await stored_turns(deployment, "alice", conversation) == ["user", "assistant"] * 2


async def test_concurrent_identical_requests_make_one_run(deployment: Deployment) -> None:
    """No conversation named: the API makes one up for the first request, and every retry is told it."""
    key = f"race-{marker()}"
    body = {"model": MODEL, "messages": user(f"[[delay:0.3]][[reply:raced {key}]]")}
    count_conversations = "SELECT count(*) AS n FROM conversations WHERE user_id = 'alice'"
    [before] = await deployment.query(count_conversations)

    async def post() -> httpx2.Response:
        async with deployment.http() as client:
            return await client.post(CHAT, json=body, headers={KEY: key})

    responses = await asyncio.gather(*(post() for _ in range(4)))
    for response in responses:
        assert response.status_code == 200, response.text
    assert len({response.json()["id"] for response in responses}) == 1
    assert {response.json()["choices"][0]["message"]["content"] for response in responses} == {f"raced {key}"}
    conversations = {response.headers["X-Conversation-ID"] for response in responses}
    assert len(conversations) == 1
    [run] = await keyed_runs(deployment, "alice", key)
    assert run["status"] == "succeeded" and len(run["request_hash"]) == 64
    assert await stored_turns(deployment, "alice", conversations.pop()) == ["user", "assistant"]
    # The requests that lost the race left no conversation behind.
    [after] = await deployment.query(count_conversations)
    assert after["n"] == before["n"] + 1


async def test_streaming_retry_follows_the_run_from_its_first_event(deployment: Deployment) -> None:
    key, conversation = f"follow-{marker()}", f"conv-{marker()}"
    body = {"model": MODEL, "stream": True, "messages": user("[[tokendelay:0.05]][[tokens:20]]")}
    headers = {KEY: key, "X-Conversation-ID": conversation}
    async with deployment.http() as client:
        async with client.stream("POST", CHAT, json=body, headers=headers) as first:
            assert first.status_code == 200
            lines = first.aiter_lines()
            seen = 0
            while seen < 3:  # the original is well under way when the retry comes
                if (await anext(lines)).startswith("data:"):
                    seen += 1
            retry = await client.post(CHAT, json=body, headers=headers)
            rest = "\n".join([line async for line in lines])
        assert retry.status_code == 200, retry.text
        assert retry.headers["X-Conversation-ID"] == conversation
    payloads = sse_payloads(retry.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(payload) for payload in payloads[:-1]]
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"])
    assert text == "tok " * 20
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert "[DONE]" in rest
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert len(await keyed_runs(deployment, "alice", key)) == 1
    assert await stored_turns(deployment, "alice", conversation) == ["user", "assistant"]


async def test_the_same_key_with_another_request_is_refused(deployment: Deployment) -> None:
    key, conversation = f"reused-{marker()}", f"conv-{marker()}"
    body = {"model": MODEL, "messages": user(f"[[reply:first {key}]]")}
    headers = {KEY: key, "X-Conversation-ID": conversation}
    async with deployment.http() as client:
        first = await client.post(CHAT, json=body, headers=headers)
        assert first.status_code == 200, first.text
        changed = await client.post(CHAT, json={**body, "messages": user("something else")}, headers=headers)
        changed_stream = await client.post(CHAT, json={**body, "stream": True}, headers=headers)
        # The conversation a header names is part of the request.
        elsewhere = await client.post(CHAT, json=body, headers={**headers, "X-Conversation-ID": f"other-{key}"})
        # So is the endpoint.
        todo = await client.post("/api/alice/chat", json={"message": "hi"}, headers={KEY: key})
    for response in (changed, changed_stream, elsewhere, todo):
        error = assert_error(response, 422, "idempotency_key_reused")
        assert error["type"] == "invalid_request_error" and error["param"] == KEY
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        await deployment.openai().chat.completions.create(
            model=MODEL, messages=user("yet another"), extra_headers=headers
        )
    assert caught.value.code == "idempotency_key_reused"
    assert len(await keyed_runs(deployment, "alice", key)) == 1
    assert await stored_turns(deployment, "alice", conversation) == ["user", "assistant"]


async def test_another_user_with_the_same_key_gets_a_run_of_their_own(deployment: Deployment) -> None:
    key = f"shared-{marker()}"
    body = {"model": MODEL, "messages": user(f"[[reply:mine {key}]]")}
    answers = {}
    for who in ("alice", "bob"):
        async with deployment.http(who) as client:
            response = await client.post(CHAT, json=body, headers={KEY: key})
        assert response.status_code == 200, response.text
        answers[who] = response.json()
        assert len(await keyed_runs(deployment, who, key)) == 1
    assert answers["alice"]["id"] != answers["bob"]["id"]
    assert answers["alice"]["choices"] == answers["bob"]["choices"]


async def test_a_bad_key_is_400(deployment: Deployment) -> None:
    body = {"model": MODEL, "messages": user("[[reply:never]]")}
    async with deployment.http() as client:
        too_long = await client.post(CHAT, json=body, headers={KEY: "k" * 256})
        not_ascii = await client.post(CHAT, json=body, headers={KEY: "clé".encode("latin-1")})
        empty = await client.post(CHAT, json=body, headers={KEY: ""})
        longest = await client.post(CHAT, json=body, headers={KEY: f"{marker()} ~!".ljust(255, "k")})
    for response in (too_long, not_ascii, empty):
        error = assert_error(response, 400, "invalid_request")
        assert error["param"] == KEY
    assert longest.status_code == 200, longest.text


async def test_a_key_is_free_again_after_a_day_or_when_its_run_never_reached_a_worker(deployment: Deployment) -> None:
    key, conversation = f"aged-{marker()}", f"conv-{marker()}"
    headers = {KEY: key, "X-Conversation-ID": conversation}
    async with deployment.http() as client:
        first = await client.post(CHAT, json={"model": MODEL, "messages": user("[[reply:day one]]")}, headers=headers)
        assert first.status_code == 200, first.text
        async with engine_of(deployment).begin() as connection:
            await connection.execute(
                text("UPDATE runs SET created_at = created_at - interval '25 hours' WHERE id = :id"),
                {"id": run_of(first)},
            )
        # Past the window, the key names nothing: another request may use it.
        second = await client.post(CHAT, json={"model": MODEL, "messages": user("[[reply:day two]]")}, headers=headers)
        assert second.status_code == 200, second.text
        assert second.json()["id"] != first.json()["id"]
        assert second.json()["choices"][0]["message"]["content"] == "day two"
        # A run that failed before any worker took it (its job could not be handed over) is no
        # outcome to repeat: the client's retry starts the run again.
        async with engine_of(deployment).begin() as connection:
            await connection.execute(
                text(
                    "UPDATE runs SET status = 'failed', attempt = 0, error_code = 'service_unavailable' WHERE id = :id"
                ),
                {"id": run_of(second)},
            )
        third = await client.post(CHAT, json={"model": MODEL, "messages": user("[[reply:day two]]")}, headers=headers)
        assert third.status_code == 200, third.text
        assert third.json()["id"] != second.json()["id"]
    [run] = await keyed_runs(deployment, "alice", key)
    assert run["id"] == run_of(third)
    freed = await deployment.query(
        "SELECT id FROM runs WHERE id IN (:a, :b) AND idempotency_key IS NULL", a=run_of(first), b=run_of(second)
    )
    assert len(freed) == 2


async def test_todo_chat_retry_gets_the_same_reply_and_does_the_tool_once(deployment: Deployment) -> None:
    key, title = f"todo-{marker()}", f"buy stamps {marker()}"
    body = {"message": "[[tool:add_task " + json.dumps({"title": title}) + "]]"}
    async with deployment.http("carol") as client:
        first = await client.post("/api/carol/chat", json=body, headers={KEY: key})
        again = await client.post("/api/carol/chat", json=body, headers={KEY: key})
        streamed = await client.post("/api/carol/chat", json=body, headers={KEY: key, "Accept": "text/event-stream"})
        tasks = (await client.get("/api/carol/tasks")).json()["data"]
    assert first.status_code == 200, first.text
    assert again.json() == first.json()
    assert first.json()["tool_calls"][0]["args"] == {"title": title}
    events = todo_events(streamed.text)
    assert [name for name, _ in events][:2] == ["tool_call", "tool_result"]
    assert events[-1] == ("done", first.json())
    assert streamed.headers["X-Conversation-ID"] == first.json()["conversation_id"]
    assert [task["title"] for task in tasks].count(title) == 1
    assert len(await keyed_runs(deployment, "carol", key)) == 1
    assert await stored_turns(deployment, "carol", first.json()["conversation_id"]) == ["user", "assistant"]


# --------------------------------------------------------------------------- caps


async def test_per_user_cap_is_429_with_retry_after(deploy: DeployFactory) -> None:
    deployment = await deploy({"SWITCHBOARD_MAX_ACTIVE_RUNS_PER_USER": "2"})
    slow = {"model": MODEL, "stream": True, "messages": user("[[delay:2]][[reply:slow]]")}
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(deployment.http("alice"))
        held = [
            await stack.enter_async_context(client.stream("POST", CHAT, json=slow, headers={KEY: f"held-{n}"}))
            for n in range(2)
        ]
        assert [response.status_code for response in held] == [200, 200]
        refused = await client.post(CHAT, json={**slow, "stream": False})
        refused_todo = await client.post("/api/alice/chat", json={"message": "hi"})
        with pytest.raises(openai.RateLimitError) as caught:
            await deployment.openai("alice").chat.completions.create(model=MODEL, messages=user("hi"))
        # A retry of a run already accepted is no new run: it is answered, not refused.
        async with client.stream("POST", CHAT, json=slow, headers={KEY: "held-0"}) as retry:
            assert retry.status_code == 200
            retried = await retry.aread()
        # Another user is not held back by alice's runs.
        async with deployment.http("bob") as bob:
            other = await bob.post(CHAT, json={"model": MODEL, "messages": user("[[reply:bob's turn]]")})
        for response in held:
            await response.aread()
    for response in (refused, refused_todo):
        assert_error(response, 429, "too_many_active_runs")
        assert_retry_after(response)
    assert caught.value.status_code == 429
    assert caught.value.response.headers["Retry-After"]
    assert "slow" in retried.decode()
    assert other.status_code == 200, other.text
    # Nothing was written for the refused requests: only the two held runs, and bob's.
    assert len(await deployment.query("SELECT id FROM runs WHERE user_id = 'alice'")) == 2
    # Once alice's runs have finished, she may start more.
    await deployment.wait_for(
        "SELECT count(*) AS n FROM runs WHERE user_id = 'alice' AND status = 'succeeded' HAVING count(*) = 2"
    )
    async with deployment.http("alice") as client:
        after = await client.post(CHAT, json={"model": MODEL, "messages": user("[[reply:again]]")})
    assert after.status_code == 200, after.text


async def test_queue_cap_and_inflight_cap_are_429_with_retry_after(deploy: DeployFactory) -> None:
    deployment = await deploy(
        {"SWITCHBOARD_MAX_QUEUED_RUNS": "3", "SWITCHBOARD_MAX_INFLIGHT_RUNS": "1"}, start_worker=False
    )
    body = {"model": MODEL, "stream": True, "messages": user("nobody is there to answer")}
    redis = aioredis.from_url(deployment.redis_url)
    try:
        async with deployment.http() as client:
            # The process follows one run at most: while a stream is open, the next run is refused.
            async with client.stream("POST", CHAT, json=body, headers={KEY: "queued-0"}) as held:
                assert held.status_code == 200
                busy = await client.post(CHAT, json=body)
            assert_error(busy, 429, "overloaded")
            assert_retry_after(busy)
            assert "in progress" in busy.json()["error"]["message"]

            # Two more runs, which stay queued: no worker takes them.
            deadline = time.monotonic() + 20
            while await redis.zcard(keys.QUEUE_NAME) < 3:
                assert time.monotonic() < deadline, "the queue did not fill"
                async with client.stream("POST", CHAT, json=body) as started:
                    if started.status_code != 200:
                        # The closed stream's slot is not free yet.
                        assert_error(await _read(started), 429, "overloaded")
                        await asyncio.sleep(0.1)
            await asyncio.sleep(0.6)  # past the API's next look at the queue

            refused = await client.post(CHAT, json=body)
            refused_todo = await client.post("/api/alice/chat", json={"message": "hi"})
            with pytest.raises(openai.RateLimitError) as caught:
                await deployment.openai("bob").chat.completions.create(model=MODEL, messages=user("hi"))
            # A retry of a queued run adds nothing to the queue: it is followed, not refused.
            async with client.stream("POST", CHAT, json=body, headers={KEY: "queued-0"}) as retry:
                retried = retry.status_code
            queued = await redis.zcard(keys.QUEUE_NAME)
    finally:
        await redis.aclose()
    for response in (refused, refused_todo):
        assert_error(response, 429, "overloaded")
        assert_retry_after(response)
        assert "queued" in response.json()["error"]["message"]
    assert caught.value.status_code == 429
    assert caught.value.response.headers["Retry-After"]
    assert retried == 200
    assert queued == 3
    assert len(await deployment.query("SELECT id FROM runs")) == 3


async def _read(response: httpx2.Response) -> httpx2.Response:
    await response.aread()
    return response
