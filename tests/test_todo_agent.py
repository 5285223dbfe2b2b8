"""The todo assistant end to end: `model: "todo"` on the OpenAI surface, real worker, real MCP session.

The fake LLM is told which tool to call (`[[tool:NAME {args}]]`) and, once the tool's result is in, it
answers `tool said: <result>`, so each reply shows exactly what the tool returned. Task numbers are per
user, so these tests run on a deployment of their own where every user starts at 1. The demo model's
phrases run on a deployment with `SWITCHBOARD_LLM_PROVIDER=demo`, and the retry test kills its own
deployment's worker. One test drives the worker's MCP binding directly (two sessions bound to one run,
racing), since overlapping attempts cannot be staged reliably from outside.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest_asyncio
from mcp import Client
from mcp_types import CallToolResult, RequestParamsMeta, TextContent
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.deployment import Deployment, running_deployment
from tests.fake_llm import FakeLLM
from todo.server import CALL_ID_META_KEY, RunBinding, TodoScope, create_todo_server
from workers.todo_mcp import SESSION_CLOSE_GRACE_S, bound_session

# A dead worker's run is retried once its lease lapses: short here, so the retry test does not wait long.
LEASE_S = 3.0


def marker() -> str:
    return uuid.uuid4().hex[:8]


def _deployment(
    postgres_url: str, redis_url: str, fake_llm: FakeLLM, env: dict[str, str] | None = None
) -> AbstractAsyncContextManager[Deployment]:
    return running_deployment(database=postgres_url, redis_url=redis_url, llm_base_url=fake_llm.base_url, env=env)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def todo(postgres_url: str, redis_url: str, fake_llm: FakeLLM) -> AsyncIterator[Deployment]:
    async with _deployment(postgres_url, redis_url, fake_llm) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def demo(postgres_url: str, redis_url: str, fake_llm: FakeLLM) -> AsyncIterator[Deployment]:
    async with _deployment(postgres_url, redis_url, fake_llm, {"SWITCHBOARD_LLM_PROVIDER": "demo"}) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def retried(postgres_url: str, redis_url: str, fake_llm: FakeLLM) -> AsyncIterator[Deployment]:
    async with _deployment(postgres_url, redis_url, fake_llm, {"SWITCHBOARD_RUN_LEASE_S": f"{LEASE_S:g}"}) as running:
        yield running


async def ask(running: Deployment, text: str, *, user: str = "alice", key: str | None = None) -> dict[str, Any]:
    """One non-streaming turn with the todo assistant; the whole response body."""
    headers = {"X-Conversation-ID": key} if key else {}
    async with running.http(user) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "todo", "messages": [{"role": "user", "content": text}]},
            headers=headers,
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def reply(body: dict[str, Any]) -> str:
    message = body["choices"][0]["message"]
    assert "tool_calls" not in message, message  # server-side tools never reach the client
    assert body["choices"][0]["finish_reason"] == "stop"
    return str(message["content"])


def said(body: dict[str, Any]) -> Any:
    """What the tool returned, from the fake LLM's `tool said: <result>`."""
    text = reply(body)
    assert text.startswith("tool said: "), text
    result = text.removeprefix("tool said: ")
    try:
        return json.loads(result)
    except ValueError:
        return result


def tool(name: str, **arguments: Any) -> str:
    return f"[[tool:{name} {json.dumps(arguments)}]]"


async def run_of(running: Deployment, key: str) -> str:
    rows = await running.wait_for(
        "SELECT m.run_id FROM messages m JOIN conversations c ON c.id = m.conversation_id "
        "WHERE c.key = :key AND m.role = 'user'",
        key=key,
    )
    assert rows, f"no stored turn for {key}"
    return str(rows[0]["run_id"])


# ------------------------------------------------------------------ the tool flow


async def test_a_tool_call_runs_on_the_server_and_only_its_answer_reaches_the_client(todo: Deployment) -> None:
    key = f"todo-flow-{marker()}"
    body = await ask(todo, tool("add_task", title="Buy groceries", description="milk"), key=key)
    assert said(body) == {"task_id": 1, "status": "created", "title": "Buy groceries"}

    [task] = await todo.query("SELECT number, title, description, completed FROM tasks WHERE user_id = 'alice'")
    assert task == {"number": 1, "title": "Buy groceries", "description": "milk", "completed": False}

    # The call is recorded with the run and the conversation it belongs to.
    run_id = await run_of(todo, key)
    [call] = await todo.query(
        "SELECT t.user_id, t.ordinal, t.tool_name, t.arguments, t.result, t.is_error, t.call_id, c.key "
        "FROM tool_calls t JOIN conversations c ON c.id = t.conversation_id WHERE t.run_id = :run_id",
        run_id=run_id,
    )
    assert call["user_id"] == "alice" and call["key"] == key
    assert (call["ordinal"], call["tool_name"], call["is_error"]) == (1, "add_task", False)
    assert call["arguments"] == {"title": "Buy groceries", "description": "milk"}
    assert call["result"] == {"task_id": 1, "status": "created", "title": "Buy groceries"}
    assert call["call_id"].startswith("call_")

    # The stored reply is the answer, not the tool call.
    messages = await todo.messages("alice", key)
    assert [(row["role"], row["tool_calls"]) for row in messages] == [("user", None), ("assistant", None)]
    assert messages[-1]["content"] == reply(body)


async def test_streaming_shows_no_tool_calls_either(todo: Deployment) -> None:
    client = todo.openai("carol")
    stream = await client.chat.completions.create(
        model="todo", messages=[{"role": "user", "content": tool("add_task", title="Streamed task")}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(choice.delta.tool_calls is None for chunk in chunks for choice in chunk.choices)
    text = "".join(choice.delta.content or "" for chunk in chunks for choice in chunk.choices)
    assert json.loads(text.removeprefix("tool said: "))["title"] == "Streamed task"
    assert [choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason] == ["stop"]


async def test_parallel_calls_are_numbered_in_the_order_the_model_made_them(todo: Deployment) -> None:
    key = f"todo-parallel-{marker()}"
    titles = [f"parallel {index} {marker()}" for index in range(3)]
    body = await ask(todo, " ".join(tool("add_task", title=title) for title in titles), user="carol", key=key)
    results = [json.loads(part) for part in reply(body).removeprefix("tool said: ").split(" | ")]
    assert [result["title"] for result in results] == titles
    run_id = await run_of(todo, key)
    calls = await todo.query("SELECT ordinal, arguments FROM tool_calls WHERE run_id = :id ORDER BY ordinal", id=run_id)
    assert [(call["ordinal"], call["arguments"]["title"]) for call in calls] == list(enumerate(titles, start=1))


# ------------------------------------------------------------------ isolation


async def test_a_user_cannot_reach_another_users_task_whatever_the_model_says(todo: Deployment) -> None:
    secret = f"alice only {marker()}"
    created = said(await ask(todo, tool("add_task", title=secret)))
    number = created["task_id"]
    before = await todo.query("SELECT * FROM tasks WHERE user_id = 'alice' ORDER BY number")

    # Bob's model names alice, her user id and her task number: none of it matters.
    listed = said(await ask(todo, tool("list_tasks", status="all", user_id="alice"), user="bob"))
    assert secret not in json.dumps(listed)
    for name, arguments in [
        ("complete_task", {"task_id": number, "user_id": "alice"}),
        ("update_task", {"task_id": number, "title": "bob was here", "user_id": "alice"}),
        ("delete_task", {"task_id": number, "user": "alice"}),
    ]:
        assert said(await ask(todo, tool(name, **arguments), user="bob")) == f"task {number} not found"
    # A task the model adds "for alice" is bob's.
    bobs = said(await ask(todo, tool("add_task", title=f"for alice? {marker()}", user_id="alice"), user="bob"))
    assert bobs["task_id"] == 1

    assert await todo.query("SELECT * FROM tasks WHERE user_id = 'alice' ORDER BY number") == before
    [owner] = await todo.query("SELECT user_id FROM tasks WHERE title = :title", title=bobs["title"])
    assert owner == {"user_id": "bob"}


# ------------------------------------------------------------------ errors


async def test_bad_input_and_missing_tasks_come_back_as_tool_errors(todo: Deployment) -> None:
    key = f"todo-errors-{marker()}"
    assert said(await ask(todo, tool("add_task", title="   "), user="carol", key=key)) == "the title must not be empty"
    assert said(await ask(todo, tool("delete_task", task_id=999), user="carol")) == "task 999 not found"
    assert said(await ask(todo, tool("complete_task", task_id=998), user="carol")) == "task 998 not found"
    assert said(await ask(todo, tool("list_tasks", status="someday"), user="carol")).startswith("status must be one of")

    # The run itself succeeded; the failed call is on record as an error, and nothing was created.
    run_id = await run_of(todo, key)
    assert await todo.query("SELECT status FROM runs WHERE id = :id", id=run_id) == [{"status": "succeeded"}]
    [call] = await todo.query("SELECT is_error, result FROM tool_calls WHERE run_id = :id", id=run_id)
    assert call == {"is_error": True, "result": {"error": "the title must not be empty"}}
    assert await todo.query("SELECT id FROM tasks WHERE user_id = 'carol' AND title = ''") == []


# ------------------------------------------------------------------ a retried run


async def test_a_retried_run_resumes_after_its_recorded_calls_and_does_nothing_twice(
    retried: Deployment, fake_llm: FakeLLM
) -> None:
    running = retried
    [first_worker] = [worker for worker in running.workers if worker.poll() is None]
    key = f"todo-retry-{marker()}"
    title = f"exactly once {marker()}"
    # Each model call waits 2 s, so the worker can be killed between the call's result and the answer.
    text = tool("add_task", title=title) + " [[delay:2]]"
    request = asyncio.create_task(ask(running, text, key=key))

    run_id = await run_of(running, key)
    recorded = await running.wait_for("SELECT id FROM tool_calls WHERE run_id = :id", id=run_id, timeout_s=15)
    assert recorded, running.logs()
    # The attempt holds the deployment's short lease, not the default one.
    [lease] = await running.query("SELECT lease_expires_at - now() AS remaining FROM runs WHERE id = :id", id=run_id)
    assert lease["remaining"] <= timedelta(seconds=LEASE_S), lease
    first_worker.kill()
    assert await asyncio.to_thread(first_worker.wait, 5) == -signal.SIGKILL
    assert (await running.query("SELECT status FROM runs WHERE id = :id", id=run_id)) == [{"status": "running"}]
    running.start_worker()

    body = await asyncio.wait_for(request, LEASE_S + 30)
    created = said(body)
    assert created == {"task_id": 1, "status": "created", "title": title}

    assert await running.query("SELECT status, attempt FROM runs WHERE id = :id", id=run_id) == [
        {"status": "succeeded", "attempt": 2}
    ]
    assert len(await running.query("SELECT id FROM tasks WHERE title = :title", title=title)) == 1
    assert len(await running.query("SELECT id FROM tool_calls WHERE run_id = :id", id=run_id)) == 1
    # Attempt 2 did not ask the model for the call again: it gave it the recorded call and result.
    asked = [body for body in fake_llm.requests if title in json.dumps(body["messages"])]
    fresh = [body for body in asked if body["messages"][-1]["role"] == "user"]
    assert len(fresh) == 1, [body["messages"][-1] for body in asked]
    resumed = asked[-1]["messages"]
    assert resumed[-1]["role"] == "tool" and json.loads(resumed[-1]["content"]) == created
    assert [call["function"]["name"] for call in resumed[-2]["tool_calls"]] == ["add_task"]


async def test_two_attempts_making_the_same_call_at_once_do_it_once(todo: Deployment) -> None:
    """The record's unique (run, position) key, raced: two sessions bound to one run's current attempt
    both make call 1. One does it; the other waits for it and gets its result. A session of a
    superseded attempt does nothing at all."""
    assert todo.engine is not None
    server = create_todo_server(db_engine=todo.engine)
    user, run_id, title = f"racer-{marker()}", f"run_race_{marker()}", f"raced {marker()}"
    async with todo.engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO runs (id, user_id, assistant, status, attempt, created_at, lease_expires_at)"
                " VALUES (:id, :user, 'todo', 'running', 2, now(), now() + interval '1 minute')"
            ),
            {"id": run_id, "user": user},
        )

    async def make_call(call_id: str, *, attempt: int = 2) -> CallToolResult:
        binding = RunBinding(user_id=user, run_id=run_id, conversation_id=None, attempt=attempt, lease_s=60)
        async with Client(
            bound_session(server, TodoScope(db_engine=todo.engine, run=binding)), mode="legacy"
        ) as client:
            meta = cast(RequestParamsMeta, {CALL_ID_META_KEY: call_id})
            return await client.call_tool("add_task", {"title": title}, meta=meta)

    async def attempt(call_id: str) -> Any:
        result = await make_call(call_id)
        [content] = result.content
        assert isinstance(content, TextContent) and not result.is_error
        return json.loads(content.text)

    superseded = await make_call("call_late", attempt=1)
    assert superseded.is_error
    assert not await todo.query("SELECT id FROM tool_calls WHERE run_id = :id", id=run_id)
    first, second = await asyncio.gather(attempt("call_first"), attempt("call_second"))
    assert first == second == {"task_id": 1, "status": "created", "title": title}
    assert len(await todo.query("SELECT id FROM tasks WHERE user_id = :user", user=user)) == 1
    [call] = await todo.query("SELECT ordinal, call_id FROM tool_calls WHERE run_id = :id", id=run_id)
    assert call["ordinal"] == 1 and call["call_id"] in ("call_first", "call_second")

    # A later attempt's call at the same position is answered from the record, not done again.
    assert await attempt("call_third") == first
    assert len(await todo.query("SELECT id FROM tasks WHERE user_id = :user", user=user)) == 1


# ------------------------------------------------------------------ the demo model


async def test_the_demo_model_understands_the_plans_phrases(demo: Deployment) -> None:
    key = f"todo-demo-{marker()}"

    async def say(text: str) -> str:
        answer = reply(await ask(demo, text, user="bob", key=key))
        assert answer.startswith("[demo model] "), answer
        return answer.removeprefix("[demo model] ")

    assert await say("Add a task to buy groceries") == "Done! I added task 1: Buy groceries."
    assert await say("I need to remember to pay bills") == "Done! I added task 2: Pay bills."
    assert await say("Add a task to walk the dog") == "Done! I added task 3: Walk the dog."
    everything = "Here are your 3 tasks: 1. Buy groceries; 2. Pay bills; 3. Walk the dog."
    assert await say("Show me all my tasks") == everything
    assert await say("Mark task 3 as complete") == "Nice work! Task 3 (Walk the dog) is marked as complete."
    assert await say("What's pending?") == "Here are your 2 tasks: 1. Buy groceries; 2. Pay bills."
    assert await say("What have I completed?") == "Here is your task: 3. Walk the dog (done)."
    assert await say("Delete task 2") == "Deleted task 2: Pay bills."
    assert await say("Change task 1 to 'Call mom tonight'") == "Updated task 1; it now reads: Call mom tonight."
    assert await say("Delete task 2") == "That didn't work: task 2 not found."
    assert await say("Add a task to water the plants") == "Done! I added task 4: Water the plants."
    # A task named rather than numbered is looked up first.
    assert await say("Remove the plants task") == "Deleted task 4: Water the plants."
    assert await say("Show me all my tasks") == "Here are your 2 tasks: 1. Call mom tonight; 3. Walk the dog (done)."
    assert (await say("hello")).startswith("I can manage your todo list.")

    rows = await demo.query("SELECT number, title, completed FROM tasks WHERE user_id = 'bob' ORDER BY number")
    assert rows == [
        {"number": 1, "title": "Call mom tonight", "completed": False},
        {"number": 3, "title": "Walk the dog", "completed": True},
    ]


async def test_the_demo_general_assistant_is_unchanged(demo: Deployment) -> None:
    body = await demo.openai("alice").chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "Add a task to buy groceries"}]
    )
    assert body.choices[0].message.content == (
        '[demo model] You said: "Add a task to buy groceries". This is turn 1 of our conversation. '
        "I am a deterministic stand-in; set SWITCHBOARD_LLM_PROVIDER to talk to a real model."
    )


async def test_many_runs_in_a_row_leave_the_worker_healthy(todo: Deployment) -> None:
    """Each run opens and closes its own MCP session; none of them may linger or slow the next."""
    for _ in range(5):
        said(await ask(todo, tool("list_tasks"), user="carol"))
    # A session closes as soon as its run is done with it: its serving loop ends by itself, without
    # waiting out the grace given to one that would not (that wait would hold up every run by as much).
    for _ in range(5):
        assert await asyncio.to_thread(closes_without_waiting, todo.database_url), (
            f"closing a run's MCP session waited for a timer (its {SESSION_CLOSE_GRACE_S:g} s grace)"
        )
    assert [worker.poll() for worker in todo.workers] == [None]


class FrozenClockLoop(asyncio.SelectorEventLoop):
    """An event loop on which time stands still until `thaw`: no timer can fire, however long it runs.

    Work that finishes on it never waited for a timer, on any machine, at any speed.
    """

    def __init__(self) -> None:
        super().__init__()
        self._now = super().time()
        self.thawed = False

    def time(self) -> float:
        return self._now

    def thaw(self) -> None:
        """Let time jump far ahead, so that whatever waits for a timer finishes (and fails the check)."""
        self._now += 24 * 3600
        self.thawed = True


def closes_without_waiting(database_url: str, hang_guard_s: float = 30.0) -> bool:
    """Open a session bound to a run the way a worker does, list the tools, close it: on a frozen clock."""

    async def session() -> None:
        engine = create_async_engine(database_url)  # the tools are listed, never called: it is never used
        try:
            scope = TodoScope(db_engine=engine)
            async with Client(bound_session(create_todo_server(db_engine=engine), scope), mode="legacy") as client:
                assert [tool.name for tool in (await client.list_tools()).tools]
        finally:
            await engine.dispose()

    loop = FrozenClockLoop()
    guard = threading.Timer(hang_guard_s, lambda: loop.call_soon_threadsafe(loop.thaw))
    try:
        guard.start()
        loop.run_until_complete(session())
    finally:
        guard.cancel()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return not loop.thawed


# ------------------------------------------------------------------ start-up


async def test_a_worker_refuses_to_start_when_the_todo_agent_cannot_reach_a_model(
    redis_url: str, tmp_path: Path
) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SWITCHBOARD_", "OPENAI_"))}
    env |= {
        "SWITCHBOARD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'worker.db'}",
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_LLM_PROVIDER": "openai",
        "SWITCHBOARD_LLM_MODEL": "gpt-4o-mini",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard", "worker", env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    lines = stderr.decode().strip().splitlines()
    assert process.returncode == 2, lines
    assert lines == [
        "switchboard: configuration error: SWITCHBOARD_LLM_API_KEY: required for provider openai "
        "(or set SWITCHBOARD_LLM_BASE_URL for a local OpenAI-compatible server)"
    ]
