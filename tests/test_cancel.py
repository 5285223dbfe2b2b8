"""Cancel (issue 9, section 2), through real processes: `POST /v1/runs/{run_id}/cancel`.

A streaming run is stopped within a second and keeps what it said; a queued run never starts; a
finished run is returned unchanged; another user's run is as missing as one that never existed; a
deleted conversation's running turn is stopped too.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx2

from tests.deployment import Deployment
from tests.test_openai_wire import CHAT, MODEL, marker, stream_payloads, user

SLOW = "[[tokens:400]] [[tokendelay:0.05]]"


async def _stream_until_text(client: httpx2.AsyncClient, body: dict[str, Any]) -> tuple[str, asyncio.Task[bytes]]:
    """Start a streaming completion; return its run id once some text has arrived, and the rest of the stream."""
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def read() -> bytes:
        chunks: list[bytes] = []
        async with client.stream("POST", CHAT, json={"model": MODEL, "stream": True, **body}) as response:
            assert response.status_code == 200, await response.aread()
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                if not started.done() and b'"content"' in b"".join(chunks):
                    started.set_result(response.headers["X-Run-ID"])
        return b"".join(chunks)

    task = asyncio.create_task(read())
    done, _ = await asyncio.wait([started, task], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    assert started in done, "the stream produced no text"
    return started.result(), task


async def _run_row(deployment: Deployment, run_id: str) -> dict[str, Any]:
    [row] = await deployment.query("SELECT status, attempt, cancel_requested_at FROM runs WHERE id = :id", id=run_id)
    return row


async def test_a_streaming_run_stops_within_a_second_and_keeps_what_it_said(deployment: Deployment) -> None:
    key = f"cancel-{marker()}"
    async with deployment.http("alice") as client:
        client.headers["X-Conversation-ID"] = key
        run_id, stream = await _stream_until_text(client, {"messages": user(SLOW)})
        asked = time.monotonic()
        response = await client.post(f"/v1/runs/{run_id}/cancel")
        stopped_s = time.monotonic() - asked
        raw = await asyncio.wait_for(stream, 30)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert stopped_s < 5
    chunks = stream_payloads(raw)
    streamed = "".join(
        choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"] if choice["delta"]
    )
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert 0 < len(streamed) < len("tok " * 400)
    # The partial answer is stored, as streamed; the run is cancelled for good.
    [answer] = await deployment.query(
        "SELECT content FROM messages WHERE run_id = :id AND role = 'assistant'", id=run_id
    )
    assert answer["content"] == streamed
    assert (await _run_row(deployment, run_id))["status"] == "cancelled"
    async with deployment.http("alice") as client:
        again = await client.post(f"/v1/runs/{run_id}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


async def test_a_queued_run_never_starts(deploy: Any) -> None:
    workerless = await deploy(start_worker=False)
    async with workerless.http("alice") as client:
        request = asyncio.create_task(client.post(CHAT, json={"model": MODEL, "messages": user(f"queued {marker()}")}))
        rows: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while not rows and time.monotonic() < deadline:
            rows = await workerless.query("SELECT id FROM runs WHERE status = 'queued'")
            await asyncio.sleep(0.05)
        [row] = rows
        response = await client.post(f"/v1/runs/{row['id']}/cancel")
        answer = await asyncio.wait_for(request, 20)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    # Its waiting client is told: an empty answer that stopped.
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["finish_reason"] == "stop"
    workerless.start_worker()
    await asyncio.sleep(0)  # a worker now exists; the run must still never start
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert (await _run_row(workerless, row["id"]))["attempt"] == 0
        await asyncio.sleep(0.2)


async def test_a_finished_run_is_returned_unchanged_and_another_users_is_missing(deployment: Deployment) -> None:
    async with deployment.http("alice") as client:
        done = await client.post(CHAT, json={"model": MODEL, "messages": user(f"[[reply:done {marker()}]]")})
        run_id = done.headers["X-Run-ID"]
        response = await client.post(f"/v1/runs/{run_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    async with deployment.http("bob") as client:
        theirs = await client.post(f"/v1/runs/{run_id}/cancel")
        missing = await client.post("/v1/runs/run_000000000000000000000000/cancel")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"]["code"] == missing.json()["error"]["code"]
    assert (await _run_row(deployment, run_id))["status"] == "succeeded"


async def test_deleting_a_conversation_stops_its_running_turn(deployment: Deployment) -> None:
    key = f"delete-{marker()}"
    async with deployment.http("alice") as client:
        client.headers["X-Conversation-ID"] = key
        run_id, stream = await _stream_until_text(client, {"messages": user(SLOW)})
        deleted = await client.delete(f"/api/alice/conversations/{key}")
        raw = await asyncio.wait_for(stream, 30)
    assert deleted.status_code == 204, deleted.text
    events = [json.loads(line[6:]) for line in raw.decode().split("\n") if line.startswith("data: {")]
    streamed = "".join(c["delta"].get("content") or "" for e in events for c in e.get("choices", []) if c["delta"])
    assert len(streamed) < len("tok " * 400), "the deleted conversation's run went on to the end"
    assert not await deployment.query("SELECT id FROM runs WHERE id = :id", id=run_id)


async def test_a_todo_run_cancelled_around_its_tool_call_records_the_call_once_and_agrees_with_the_task_list(
    deployment: Deployment,
) -> None:
    title = f"cancelled chores {marker()}"
    message = "[[tool:add_task " + json.dumps({"title": title}) + "]] [[delay:2]]"
    async with deployment.http("bob") as client:
        names: list[str] = []
        async with client.stream(
            "POST", "/api/bob/chat", json={"message": message}, headers={"Accept": "text/event-stream"}
        ) as response:
            run_id = response.headers["X-Run-ID"]
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    names.append(line.removeprefix("event:").strip())
                    if names[-1] == "tool_call":
                        cancelled = await client.post(f"/v1/runs/{run_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert names[0] == "tool_call" and names[-1] == "cancelled", names
    records = await deployment.query("SELECT id FROM tool_calls WHERE run_id = :id", id=run_id)
    tasks = await deployment.query("SELECT id FROM tasks WHERE user_id = 'bob' AND title = :title", title=title)
    assert len(records) == len(tasks) <= 1
