"""`POST /api/{user_id}/chat` end to end with the todo assistant: JSON and SSE, tools, tasks, isolation."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.deployment import Deployment


def marker() -> str:
    return uuid.uuid4().hex[:8]


def add_task(title: str) -> str:
    return "[[tool:add_task " + json.dumps({"title": title}) + "]]"


async def chat(deployment: Deployment, user: str, message: str, conversation_id: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    async with deployment.http(user) as http:
        response = await http.post(f"/api/{user}/chat", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def tasks_of(deployment: Deployment, user: str, **params: Any) -> list[dict[str, Any]]:
    async with deployment.http(user) as http:
        response = await http.get(f"/api/{user}/tasks", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def test_json_reply_lists_the_tool_calls_and_the_history_keeps_them(deployment: Deployment) -> None:
    title = f"water the plants {marker()}"
    body = await chat(deployment, "alice", add_task(title))
    assert set(body) == {"conversation_id", "run_id", "response", "tool_calls"}
    [call] = body["tool_calls"]
    assert call["tool"] == "add_task" and call["args"] == {"title": title}
    assert call["result"]["status"] == "created" and call["result"]["title"] == title
    assert body["response"].startswith("tool said: ")
    number = call["result"]["task_id"]
    assert any(task["id"] == number and task["title"] == title for task in await tasks_of(deployment, "alice"))

    # The same conversation, named by the id it was given (a JSON number would do as well for a number).
    second = await chat(deployment, "alice", "[[reply:noted]]", conversation_id=body["conversation_id"])
    assert second["conversation_id"] == body["conversation_id"] and second["tool_calls"] == []
    async with deployment.http("alice") as http:
        messages = (await http.get(f"/api/alice/conversations/{body['conversation_id']}/messages")).json()["data"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert [c["tool"] for c in messages[1]["tool_calls"]] == ["add_task"]
    assert messages[1]["tool_calls"][0]["result"]["task_id"] == number
    assert messages[3]["tool_calls"] == []


async def test_streamed_reply_uses_the_named_events(deployment: Deployment) -> None:
    title = f"streamed chores {marker()}"
    events: list[tuple[str, Any]] = []
    async with (
        deployment.http("bob") as http,
        http.stream(
            "POST", "/api/bob/chat", json={"message": add_task(title)}, headers={"Accept": "text/event-stream"}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line.removeprefix("event:").strip()
            elif line.startswith("data:") and name is not None:
                events.append((name, json.loads(line.removeprefix("data:").strip())))
                name = None
    names = [name for name, _ in events]
    assert names[:2] == ["tool_call", "tool_result"]
    assert "delta" in names and names[-1] == "done"
    assert events[0][1] == {"tool": "add_task", "args": {"title": title}}
    assert events[1][1]["result"]["title"] == title
    done = events[-1][1]
    assert done["response"] == "".join(data["text"] for name, data in events if name == "delta")
    assert [call["tool"] for call in done["tool_calls"]] == ["add_task"]


async def test_task_lists_are_the_callers_own_and_page_by_cursor(deployment: Deployment) -> None:
    own = [f"carol task {index} {marker()}" for index in range(3)]
    for title in own:
        await chat(deployment, "carol", add_task(title))
    await chat(deployment, "bob", add_task(f"bob's secret {marker()}"))

    carols = await tasks_of(deployment, "carol")
    assert [task["title"] for task in carols][-3:] == own
    assert all("secret" not in task["title"] for task in carols)
    numbers = [task["id"] for task in carols]
    assert numbers == sorted(numbers) and numbers[0] == 1  # carol's own numbering

    seen: list[int] = []
    cursor = None
    async with deployment.http("carol") as http:
        while True:
            page = (
                await http.get("/api/carol/tasks", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
            ).json()
            seen.extend(task["id"] for task in page["data"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        pending = (await http.get("/api/carol/tasks", params={"status": "pending"})).json()["data"]
        bad = await http.get("/api/carol/tasks", params={"status": "done"})
        others = await http.get("/api/bob/tasks")
    assert seen == numbers
    assert {task["id"] for task in pending} == set(numbers)
    assert bad.status_code == 400 and others.status_code == 403


async def test_deleting_a_conversation_keeps_its_tasks(deployment: Deployment) -> None:
    title = f"outlives its chat {marker()}"
    body = await chat(deployment, "alice", add_task(title))
    async with deployment.http("alice") as http:
        assert (await http.delete(f"/api/alice/conversations/{body['conversation_id']}")).status_code == 204
    assert any(task["title"] == title for task in await tasks_of(deployment, "alice"))
    calls = await deployment.query(
        "SELECT count(*) AS n FROM tool_calls WHERE user_id = 'alice' AND CAST(arguments AS TEXT) LIKE :pattern",
        pattern=f"%{title}%",
    )
    assert calls[0]["n"] == 0
