"""The runs API (issue 9, section 1): `X-Run-ID` on every response that starts a run, reading a run back,
listing runs, and a run's events as Server-Sent Events, from the start, after an event, live, and
synthesized from the stored outcome once the replay log is gone.

Everything runs against the shared `deployment`, raw HTTP, SSE parsed by hand.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx2
from redis import asyncio as aioredis

from domain import keys
from tests.deployment import Deployment

MODEL = "assistant"
CHAT = "/v1/chat/completions"
RUN_FIELDS = {
    "id",
    "object",
    "status",
    "assistant",
    "conversation_id",
    "created_at",
    "started_at",
    "finished_at",
    "attempt",
    "error",
    "usage",
    "pending_approvals",
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def marker() -> str:
    return "m" + uuid.uuid4().hex[:16]


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    """Each event of a raw SSE body as {"id", "event", "data"}, checking its framing on the way."""
    text = raw.decode("utf-8")
    assert not text or text.endswith("\n\n"), f"stream does not end with a blank line: {text[-80:]!r}"
    events = []
    for block in text.split("\n\n")[:-1]:
        lines = [line for line in block.split("\n") if not line.startswith(":")]
        if not lines:
            continue
        fields: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(": ")
            assert name in ("id", "event", "data") and name not in fields, f"unexpected SSE lines: {block!r}"
            fields[name] = value
        assert set(fields) == {"id", "event", "data"}, block
        data = json.loads(fields["data"])
        assert data["type"] == fields["event"] and data["seq"] == int(fields["id"])
        events.append({"id": int(fields["id"]), "event": fields["event"], "data": data})
    return events


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(event["data"]["text"] for event in events if event["event"] == "text.delta")


async def complete(
    client: httpx2.AsyncClient, text: str, *, conversation: str | None = None, **body: Any
) -> httpx2.Response:
    headers = {"X-Conversation-ID": conversation} if conversation else None
    return await client.post(CHAT, json={"model": MODEL, "messages": user(text), **body}, headers=headers)


async def events_of(client: httpx2.AsyncClient, run_id: str, **kwargs: Any) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/runs/{run_id}/events", **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0].strip() == "text/event-stream"
    return sse_events(response.content)


async def stored_answer(deployment: Deployment, run_id: str) -> str:
    [row] = await deployment.wait_for("SELECT content FROM messages WHERE item_id = :item", item=f"{run_id}-out")
    return str(row["content"])


async def test_every_response_that_starts_a_run_names_it(deployment: Deployment) -> None:
    async with deployment.http() as client:
        plain = await complete(client, "[[reply:named]]")
        assert plain.status_code == 200 and plain.headers["x-run-id"].startswith("run_")
        async with client.stream(
            "POST", CHAT, json={"model": MODEL, "stream": True, "messages": user("[[reply:named too]]")}
        ) as streamed:
            run_id = streamed.headers["x-run-id"]
            await streamed.aread()
        assert run_id.startswith("run_") and run_id != plain.headers["x-run-id"]
        failed = await complete(client, f"[[error:500]] {marker()}")
        assert failed.status_code == 502 and failed.headers["x-run-id"].startswith("run_")
        assert (await client.get(f"/v1/runs/{failed.headers['x-run-id']}")).json()["status"] == "failed"

        todo = await client.post("/api/alice/chat", json={"message": "[[reply:noted]]"})
        assert todo.status_code == 200, todo.text
        assert todo.json()["run_id"] == todo.headers["x-run-id"]
        async with client.stream(
            "POST", "/api/alice/chat", json={"message": "[[reply:noted live]]"}, headers={"Accept": "text/event-stream"}
        ) as live:
            header = live.headers["x-run-id"]
            raw = (await live.aread()).decode()
    done = [block for block in raw.split("\n\n") if block.startswith("event: done")]
    [block] = done
    data = json.loads(block.split("data: ", 1)[1])
    assert data["run_id"] == header and data["response"] == "noted live"


async def test_a_finished_run_reads_back(deployment: Deployment) -> None:
    conversation = marker()
    async with deployment.http() as client:
        ok = await complete(client, "[[reply:read me back]]", conversation=conversation)
        failed = await complete(client, f"[[error:500]] {marker()}", conversation=conversation)
        run = (await client.get(f"/v1/runs/{ok.headers['x-run-id']}")).json()
        bad = (await client.get(f"/v1/runs/{failed.headers['x-run-id']}")).json()
    assert set(run) == RUN_FIELDS
    assert run["id"] == ok.headers["x-run-id"] and run["object"] == "run"
    assert run["status"] == "succeeded" and run["assistant"] == MODEL and run["conversation_id"] == conversation
    assert run["attempt"] == 1 and run["error"] is None
    now = time.time()
    assert all(isinstance(run[name], int) and abs(run[name] - now) < 120 for name in ("created_at", "started_at"))
    assert run["created_at"] <= run["started_at"] <= run["finished_at"]
    usage = ok.json()["usage"]
    assert run["usage"] == {
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "total_tokens": usage["total_tokens"],
    }
    assert bad["status"] == "failed" and bad["conversation_id"] == conversation
    assert bad["error"]["code"] == "provider_error" and bad["error"]["message"]
    assert bad["finished_at"] is not None and bad["usage"] is None


async def test_another_users_run_is_missing(deployment: Deployment) -> None:
    async with deployment.http() as alice:
        run_id = (await complete(alice, "[[reply:mine]]")).headers["x-run-id"]
    async with deployment.http("bob") as bob:
        for path in (
            f"/v1/runs/{run_id}",
            f"/v1/runs/{run_id}/events",
            "/v1/runs/run_nope",
            "/v1/runs/run_nope/events",
        ):
            response = await bob.get(path)
            assert response.status_code == 404, (path, response.text)
            assert response.json()["error"]["code"] == "run_not_found"
        listed = (await bob.get("/v1/runs", params={"limit": 200})).json()
        assert run_id not in {run["id"] for run in listed["data"]}
    async with deployment.http(None) as anonymous:
        assert (await anonymous.get(f"/v1/runs/{run_id}")).status_code == 401


async def test_list_filters_and_pages_newest_first(deployment: Deployment) -> None:
    conversation = marker()
    async with deployment.http("carol") as client:
        ids = []
        for text in ("[[reply:one]]", f"[[error:500]] {marker()}", "[[reply:three]]"):
            ids.append((await complete(client, text, conversation=conversation)).headers["x-run-id"])
        await complete(client, "[[reply:elsewhere]]", conversation=marker())

        everything = (await client.get("/v1/runs", params={"conversation_id": conversation})).json()
        assert everything["object"] == "list" and everything["has_more"] is False
        assert everything["next_cursor"] is None
        assert [run["id"] for run in everything["data"]] == ids[::-1]

        failed = (await client.get("/v1/runs", params={"conversation_id": conversation, "status": "failed"})).json()
        assert [run["id"] for run in failed["data"]] == [ids[1]]

        first = (await client.get("/v1/runs", params={"conversation_id": conversation, "limit": 2})).json()
        assert [run["id"] for run in first["data"]] == [ids[2], ids[1]] and first["has_more"] is True
        rest = await client.get(
            "/v1/runs", params={"conversation_id": conversation, "limit": 2, "after": first["next_cursor"]}
        )
        assert [run["id"] for run in rest.json()["data"]] == [ids[0]] and rest.json()["has_more"] is False

        newest = (await client.get("/v1/runs", params={"limit": 1})).json()
        assert newest["data"][0]["conversation_id"] != conversation and newest["has_more"] is True
        assert (await client.get("/v1/runs", params={"conversation_id": marker()})).json()["data"] == []

        for params in ({"status": "done"}, {"after": "not-a-cursor"}, {"after": "WzFd"}, {"limit": "0"}):
            response = await client.get("/v1/runs", params=params)
            assert response.status_code == 400, (params, response.text)
        assert (await client.get(f"/v1/runs/{ids[0]}/events", params={"after": "x"})).status_code == 400


async def test_events_of_a_finished_run_from_the_start_and_after_an_event(deployment: Deployment) -> None:
    async with deployment.http() as client:
        run_id = (await complete(client, "[[reply:the whole answer, replayed]]", conversation=marker())).headers[
            "x-run-id"
        ]
        events = await events_of(client, run_id)
        assert events[0]["event"] == "run.started" and events[-1]["event"] == "run.completed"
        assert [event["id"] for event in events] == sorted({event["id"] for event in events})
        assert all(event["data"]["run_id"] == run_id for event in events)
        assert text_of(events) == await stored_answer(deployment, run_id) == "the whole answer, replayed"

        cut = events[2]["id"]
        by_header = await events_of(client, run_id, headers={"Last-Event-ID": str(cut)})
        by_query = await events_of(client, run_id, params={"after": cut})
        assert by_header == by_query == [event for event in events if event["id"] > cut]
        assert await events_of(client, run_id, params={"after": events[-1]["id"]}) == []


async def test_events_of_a_failed_run_end_with_run_failed(deployment: Deployment) -> None:
    async with deployment.http() as client:
        run_id = (await complete(client, f"[[error:500]] {marker()}")).headers["x-run-id"]
        events = await events_of(client, run_id)
    assert events[-1]["event"] == "run.failed" and events[-1]["data"]["code"] == "provider_error"


async def test_events_of_a_run_still_streaming_join_to_the_stored_answer(deployment: Deployment) -> None:
    body = {"model": MODEL, "stream": True, "messages": user(f"[[tokendelay:0.03]][[tokens:30]] {marker()}")}
    async with deployment.http() as client, client.stream("POST", CHAT, json=body) as started:
        run_id = started.headers["x-run-id"]
        joined, _ = await asyncio.gather(events_of(client, run_id), started.aread())
    assert joined[-1]["event"] == "run.completed"
    assert text_of(joined) == await stored_answer(deployment, run_id) == "tok " * 30


async def test_a_run_joined_part_way_gets_the_rest(deployment: Deployment) -> None:
    body = {"model": MODEL, "stream": True, "messages": user(f"[[tokendelay:0.03]][[tokens:30]] {marker()}")}
    async with deployment.http() as client, client.stream("POST", CHAT, json=body) as started:
        run_id = started.headers["x-run-id"]
        await asyncio.sleep(0.3)
        early = await client.get(f"/v1/runs/{run_id}")
        assert early.json()["status"] in ("queued", "running")
        async with client.stream("GET", f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": "3"}) as rest:
            events = sse_events(await rest.aread())
        await started.aread()
        everything = await events_of(client, run_id, params={"after": 0})
    assert events[0]["id"] == 4 and events[-1]["event"] == "run.completed"
    assert [event for event in everything if event["id"] > 3] == events
    assert text_of(everything) == await stored_answer(deployment, run_id) == "tok " * 30


async def test_a_finished_run_whose_log_is_gone_is_synthesized(deployment: Deployment) -> None:
    async with deployment.http() as client:
        answered = await complete(client, "[[reply:remembered by the database]]", conversation=marker())
        called = await complete(
            client, '[[tool:get_weather {"city": "Paris"}]]', conversation=marker(), tools=[WEATHER_TOOL]
        )
        failed = await complete(client, f"[[error:500]] {marker()}", conversation=marker())
        redis = aioredis.from_url(deployment.redis_url)
        try:
            for response in (answered, called, failed):
                assert await redis.delete(keys.run_log(response.headers["x-run-id"])) == 1
        finally:
            await redis.aclose()

        events = await events_of(client, answered.headers["x-run-id"])
        assert [(event["id"], event["event"]) for event in events] == [
            (1, "run.started"),
            (2, "text.delta"),
            (3, "run.completed"),
        ]
        assert events[1]["data"]["text"] == "remembered by the database"
        assert events[2]["data"]["finish_reason"] == "stop"
        assert events[2]["data"]["usage"]["prompt_tokens"] == answered.json()["usage"]["prompt_tokens"]
        after = await events_of(client, answered.headers["x-run-id"], headers={"Last-Event-ID": "1"})
        assert after == events[1:]

        tool_events = await events_of(client, called.headers["x-run-id"])
        [call] = called.json()["choices"][0]["message"]["tool_calls"]
        deltas = [event["data"] for event in tool_events if event["event"] == "client_tool.delta"]
        assert [(d["call_id"], d["name"], json.loads(d["arguments"])) for d in deltas] == [
            (call["id"], "get_weather", {"city": "Paris"})
        ]
        assert tool_events[-1]["data"]["finish_reason"] == "tool_calls"

        failed_events = await events_of(client, failed.headers["x-run-id"])
        assert [event["event"] for event in failed_events] == ["run.started", "run.failed"]
        assert failed_events[-1]["data"]["code"] == "provider_error"
