"""`POST /chatkit`: the ChatKit protocol over our conversations, driven with the `openai-chatkit` types.

Requests are the package's request models, serialised; streams are parsed back into its
`ThreadStreamEvent`s and answers into its `Thread` and `Page` models. The shared deployment's fake
model is told what to do by directives in the message (`[[tool:add_task {...}]]` makes it call the
tool, then answer `tool said: <result>`); one test talks to the demo model on a deployment of its own.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest_asyncio
from chatkit.types import (
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    ErrorEvent,
    InferenceOptions,
    ItemsListParams,
    ItemsListReq,
    Page,
    StreamOptionsEvent,
    TaskItem,
    Thread,
    ThreadAddUserMessageParams,
    ThreadCreatedEvent,
    ThreadCreateParams,
    ThreadDeleteParams,
    ThreadGetByIdParams,
    ThreadItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadListParams,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsDeleteReq,
    ThreadsGetByIdReq,
    ThreadsListReq,
    ThreadStreamEvent,
    ThreadsUpdateReq,
    ThreadUpdatedEvent,
    ThreadUpdateParams,
    UserMessageInput,
    UserMessageItem,
    UserMessageTextContent,
)
from pydantic import BaseModel, TypeAdapter

from tests.deployment import Deployment
from tests.fake_llm import FakeLLM

EVENTS: TypeAdapter[ThreadStreamEvent] = TypeAdapter(ThreadStreamEvent)
ITEMS: TypeAdapter[Page[ThreadItem]] = TypeAdapter(Page[ThreadItem])
THREADS: TypeAdapter[Page[Thread]] = TypeAdapter(Page[Thread])


def marker() -> str:
    return uuid.uuid4().hex[:8]


def add_task(title: str) -> str:
    return f"[[tool:add_task {json.dumps({'title': title})}]]"


def user_input(text: str) -> UserMessageInput:
    return UserMessageInput(
        content=[UserMessageTextContent(text=text)], attachments=[], inference_options=InferenceOptions()
    )


def create(text: str) -> ThreadsCreateReq:
    return ThreadsCreateReq(params=ThreadCreateParams(input=user_input(text)))


def add_message(thread_id: str, text: str) -> ThreadsAddUserMessageReq:
    return ThreadsAddUserMessageReq(params=ThreadAddUserMessageParams(thread_id=thread_id, input=user_input(text)))


def get_thread(thread_id: str) -> ThreadsGetByIdReq:
    return ThreadsGetByIdReq(params=ThreadGetByIdParams(thread_id=thread_id))


def list_items(
    thread_id: str, *, order: Literal["asc", "desc"] = "asc", limit: int | None = None, after: str | None = None
) -> ItemsListReq:
    return ItemsListReq(params=ItemsListParams(thread_id=thread_id, order=order, limit=limit, after=after))


async def post(running: Deployment, request: BaseModel | bytes, *, user: str | None = "alice") -> Any:
    body = request if isinstance(request, bytes) else request.model_dump_json().encode()
    async with running.http(user) as http:
        return await http.post("/chatkit", content=body, headers={"Content-Type": "application/json"})


async def stream(running: Deployment, request: BaseModel, *, user: str = "alice") -> list[ThreadStreamEvent]:
    async with (
        running.http(user) as http,
        http.stream(
            "POST", "/chatkit", content=request.model_dump_json(), headers={"Content-Type": "application/json"}
        ) as response,
    ):
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        return [event async for event in events_of(response)]


async def events_of(response: Any) -> AsyncIterator[ThreadStreamEvent]:
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            yield EVENTS.validate_json(line.removeprefix("data: "))


async def call(running: Deployment, request: BaseModel, *, user: str = "alice") -> Any:
    response = await post(running, request, user=user)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.content


def assert_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert {"message", "type", "code"} <= set(error)
    return dict(error)


def created_thread(events: list[ThreadStreamEvent]) -> str:
    return next(event.thread.id for event in events if isinstance(event, ThreadCreatedEvent))


def done_items(events: list[ThreadStreamEvent]) -> list[ThreadItem]:
    return [event.item for event in events if isinstance(event, ThreadItemDoneEvent)]


def answer_of(events: list[ThreadStreamEvent]) -> AssistantMessageItem:
    [answer] = [item for item in done_items(events) if isinstance(item, AssistantMessageItem)]
    return answer


def text_of(item: ThreadItem) -> str:
    if isinstance(item, UserMessageItem | AssistantMessageItem):
        return "".join(part.text for part in item.content)
    raise AssertionError(f"not a message: {item}")


async def all_items(running: Deployment, thread_id: str, *, user: str = "alice") -> list[ThreadItem]:
    return ITEMS.validate_json(await call(running, list_items(thread_id, limit=200), user=user)).data


async def message_rows(running: Deployment, user: str, thread_id: str) -> list[dict[str, Any]]:
    return await running.query(
        "SELECT m.item_id, m.role, m.content, m.run_id FROM messages m JOIN conversations c ON c.id = m.conversation_id"
        " WHERE c.user_id = :user AND c.key = :key ORDER BY m.id",
        user=user,
        key=thread_id,
    )


async def tasks_of(running: Deployment, user: str) -> list[str]:
    async with running.http(user) as http:
        response = await http.get(f"/api/{user}/tasks", params={"limit": 200})
    return [task["title"] for task in response.json()["data"]]


# ------------------------------------------------------------------ a conversation, start to end


async def test_a_thread_streams_tool_progress_and_the_answer_and_is_stored_once(deployment: Deployment) -> None:
    m = marker()
    title = f"chatkit task {m}"
    events = await stream(deployment, create(add_task(title)))
    thread_id = created_thread(events)
    assert any(isinstance(event, StreamOptionsEvent) and not event.stream_options.allow_cancel for event in events)

    # The user's item first, under the name of the run that answers it.
    [user_item] = [item for item in done_items(events) if isinstance(item, UserMessageItem)]
    assert user_item.id.endswith("-in0")
    run_id = user_item.id.removesuffix("-in0")

    # The tool call: added while it runs, done with what it returned.
    [added] = [e.item for e in events if isinstance(e, ThreadItemAddedEvent) and isinstance(e.item, TaskItem)]
    [called] = [item for item in done_items(events) if isinstance(item, TaskItem)]
    assert added.id == called.id and called.id.startswith(f"{run_id}-tool-")
    assert added.task.status_indicator == "loading" and called.task.status_indicator == "complete"
    assert called.task.title == f'add_task(title="{title}")'
    assert title in (called.task.content or "")

    # The answer: a content part, text deltas, and the done item with the whole text.
    answer = answer_of(events)
    assert answer.id == f"{run_id}-out"
    deltas = [
        event.update.delta
        for event in events
        if isinstance(event, ThreadItemUpdatedEvent) and isinstance(event.update, AssistantMessageContentPartTextDelta)
    ]
    assert deltas and "".join(deltas) == text_of(answer)
    assert text_of(answer).startswith("tool said: ") and title in text_of(answer)
    order = [
        type(event.item).__name__ if isinstance(event, ThreadItemDoneEvent | ThreadItemAddedEvent) else None
        for event in events
    ]
    assert order.index("TaskItem") < order.index("AssistantMessageItem")

    # The thread is titled from its first message, and the client is told.
    updated = [event.thread for event in events if isinstance(event, ThreadUpdatedEvent)]
    assert updated and updated[-1].title == add_task(title)
    assert not any(isinstance(event, ErrorEvent) for event in events)

    # Stored once, under the ids the stream used, though ChatKit saved both items itself too.
    rows = await message_rows(deployment, "alice", thread_id)
    assert [(row["item_id"], row["role"]) for row in rows] == [
        (f"{run_id}-in0", "user"),
        (f"{run_id}-out", "assistant"),
    ]
    assert rows[1]["content"] == text_of(answer)
    assert title in await tasks_of(deployment, "alice")

    # A second message continues the thread.
    second = await stream(deployment, add_message(thread_id, f"[[reply:second answer {m}]]"))
    assert not any(isinstance(event, ThreadCreatedEvent | ErrorEvent) for event in second)
    assert text_of(answer_of(second)) == f"second answer {m}"
    rows = await message_rows(deployment, "alice", thread_id)
    assert [row["role"] for row in rows] == ["user", "assistant", "user", "assistant"]
    assert len({row["item_id"] for row in rows}) == 4

    # Its items are the stored history: messages and the tool call, in order, as the stream named them.
    items = await all_items(deployment, thread_id)
    assert [type(item).__name__ for item in items] == [
        "UserMessageItem",
        "TaskItem",
        "AssistantMessageItem",
        "UserMessageItem",
        "AssistantMessageItem",
    ]
    assert [item.id for item in items[:3]] == [user_item.id, called.id, answer.id]
    assert items[1] == called.model_copy(update={"created_at": items[1].created_at})
    async with deployment.http("alice") as http:
        messages = (await http.get(f"/api/alice/conversations/{thread_id}/messages")).json()["data"]
    shown = [item for item in items if isinstance(item, UserMessageItem | AssistantMessageItem)]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user" if isinstance(item, UserMessageItem) else "assistant", text_of(item)) for item in shown
    ]
    assert [call["tool"] for call in messages[1]["tool_calls"]] == ["add_task"]

    # Newest first, a page at a time.
    newest_first: list[ThreadItem] = []
    after = None
    while True:
        page = ITEMS.validate_json(await call(deployment, list_items(thread_id, order="desc", limit=2, after=after)))
        assert len(page.data) <= 2
        newest_first += page.data
        if not page.has_more:
            break
        after = page.after
    assert [item.id for item in newest_first] == [item.id for item in reversed(items)]

    thread = Thread.model_validate_json(await call(deployment, get_thread(thread_id)))
    assert thread.title == add_task(title)
    assert [item.id for item in thread.items.data] == [item.id for item in items]


async def test_threads_are_listed_renamed_and_deleted(deployment: Deployment) -> None:
    m = marker()
    ids = [
        created_thread(await stream(deployment, create(f"[[reply:hi]] list {m} {n}"), user="carol")) for n in range(3)
    ]

    listed: list[Thread] = []
    after = None
    while True:
        page = THREADS.validate_json(
            await call(deployment, ThreadsListReq(params=ThreadListParams(limit=2, after=after)), user="carol")
        )
        listed += page.data
        if not page.has_more:
            break
        after = page.after
    mine = [thread for thread in listed if thread.id in ids]
    assert [thread.id for thread in mine] == list(reversed(ids))  # newest first
    assert [thread.title for thread in mine] == [f"[[reply:hi]] list {m} {n}" for n in (2, 1, 0)]

    renamed = Thread.model_validate_json(
        await call(
            deployment,
            ThreadsUpdateReq(params=ThreadUpdateParams(thread_id=ids[0], title=f"Groceries {m}")),
            user="carol",
        )
    )
    assert renamed.title == f"Groceries {m}"
    assert (
        Thread.model_validate_json(await call(deployment, get_thread(ids[0]), user="carol")).title == f"Groceries {m}"
    )
    async with deployment.http("carol") as http:
        conversations = (await http.get("/api/carol/conversations", params={"limit": 200})).json()["data"]
    assert {c["id"]: c["title"] for c in conversations}[ids[0]] == f"Groceries {m}"

    assert await call(deployment, ThreadsDeleteReq(params=ThreadDeleteParams(thread_id=ids[0])), user="carol") == b"{}"
    assert_error(await post(deployment, get_thread(ids[0]), user="carol"), 404)
    assert_error(
        await post(deployment, ThreadsDeleteReq(params=ThreadDeleteParams(thread_id=ids[0])), user="carol"), 404
    )
    assert await message_rows(deployment, "carol", ids[0]) == []
    left = await deployment.query(
        "SELECT count(*) AS n FROM conversations WHERE user_id = 'carol' AND key = :key", key=ids[0]
    )
    assert left[0]["n"] == 0


async def test_deleting_a_thread_removes_its_tool_calls_but_not_the_tasks(deployment: Deployment) -> None:
    title = f"kept task {marker()}"
    events = await stream(deployment, create(add_task(title)), user="bob")
    thread_id = created_thread(events)
    run_id = answer_of(events).id.removesuffix("-out")
    assert await deployment.query("SELECT id FROM tool_calls WHERE run_id = :run", run=run_id)
    await call(deployment, ThreadsDeleteReq(params=ThreadDeleteParams(thread_id=thread_id)), user="bob")
    assert await deployment.query("SELECT id FROM tool_calls WHERE run_id = :run", run=run_id) == []
    assert await deployment.query("SELECT id FROM messages WHERE run_id = :run", run=run_id) == []
    assert title in await tasks_of(deployment, "bob")


# ------------------------------------------------------------------ refusals come before any stream


async def test_another_users_thread_is_not_found_before_any_stream(deployment: Deployment) -> None:
    thread_id = created_thread(await stream(deployment, create(f"[[reply:mine]] {marker()}"), user="bob"))
    for request in (
        get_thread(thread_id),
        add_message(thread_id, "hello"),
        list_items(thread_id),
        ThreadsUpdateReq(params=ThreadUpdateParams(thread_id=thread_id, title="taken")),
        ThreadsDeleteReq(params=ThreadDeleteParams(thread_id=thread_id)),
    ):
        assert_error(await post(deployment, request, user="alice"), 404)
    listed = THREADS.validate_json(await call(deployment, ThreadsListReq(params=ThreadListParams(limit=200))))
    assert thread_id not in [thread.id for thread in listed.data]
    assert [row["role"] for row in await message_rows(deployment, "bob", thread_id)] == ["user", "assistant"]
    assert Thread.model_validate_json(await call(deployment, get_thread(thread_id), user="bob")).id == thread_id


async def test_malformed_and_unsupported_requests_are_400(deployment: Deployment) -> None:
    thread_id = created_thread(await stream(deployment, create(f"[[reply:ok]] {marker()}")))
    with_attachment = user_input("look at this").model_copy(update={"attachments": ["atc_1"]})
    for body in (
        b"not json",
        b"[]",
        b'{"type": "threads.nonsense", "params": {}}',
        b'{"type": "threads.create"}',
        b'{"type": "threads.create", "params": {"input": {"content": "hi"}}}',
        create("   "),
        create("x" * 4001),
        ThreadsCreateReq(params=ThreadCreateParams(input=with_attachment)),
        b'{"type": "attachments.create", "params": {"name": "a.txt", "size": 1, "mime_type": "text/plain"}}',
        b'{"type": "threads.retry_after_item", "params": {"thread_id": "%s", "item_id": "x"}}' % thread_id.encode(),
        ThreadsListReq(params=ThreadListParams(limit=0)),
        list_items(thread_id, after="no-such-item"),
    ):
        assert_error(await post(deployment, body), 400)
    assert_error(await post(deployment, create("hi"), user=None), 401)
    assert_error(await post(deployment, b"not json", user=None), 401)  # credentials first


# ------------------------------------------------------------------ the run outlives its stream


async def test_a_client_that_goes_away_does_not_stop_the_run(deployment: Deployment) -> None:
    m = marker()
    text = f"a long answer {m} that keeps streaming after the client has gone away. " * 3
    deltas: list[str] = []
    async with (
        deployment.http("alice") as http,
        http.stream(
            "POST",
            "/chatkit",
            content=create(f"[[reply:{text}]] [[tokendelay:0.05]]").model_dump_json(),
            headers={"Content-Type": "application/json"},
        ) as response,
    ):
        async for event in events_of(response):
            if isinstance(event, ThreadCreatedEvent):
                thread_id = event.thread.id
            if isinstance(event, ThreadItemUpdatedEvent) and isinstance(
                event.update, AssistantMessageContentPartTextDelta
            ):
                deltas.append(event.update.delta)
                if len(deltas) == 2:
                    break
    assert "".join(deltas) != text
    rows = await deployment.wait_for(
        "SELECT m.content FROM messages m JOIN conversations c ON c.id = m.conversation_id"
        " WHERE c.key = :key AND m.role = 'assistant'",
        key=thread_id,
    )
    assert [row["content"] for row in rows] == [text]
    # Nothing else was kept: no partial answer, no note that the user cancelled.
    assert [row["role"] for row in await message_rows(deployment, "alice", thread_id)] == ["user", "assistant"]
    items = await all_items(deployment, thread_id)
    assert [type(item).__name__ for item in items] == ["UserMessageItem", "AssistantMessageItem"]
    assert text_of(items[1]) == text
    # The API saw the client go: ChatKit's cancel handling ran, and kept nothing.
    deadline = time.monotonic() + 10
    while "chatkit.stream_left" not in deployment.log_text("api") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert "chatkit.stream_left" in deployment.log_text("api")


async def test_a_failed_run_is_an_error_event(deployment: Deployment) -> None:
    events = await stream(deployment, create(f"[[error:400 no way]] {marker()}"))
    errors = [event for event in events if isinstance(event, ErrorEvent)]
    assert len(errors) == 1 and errors[0].message and not errors[0].allow_retry
    assert not any(isinstance(item, AssistantMessageItem) for item in done_items(events))
    assert [type(item).__name__ for item in await all_items(deployment, created_thread(events))] == ["UserMessageItem"]


# ------------------------------------------------------------------ the demo model


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def demo(postgres_url: str, redis_url: str, fake_llm: FakeLLM) -> AsyncIterator[Deployment]:
    running = Deployment(
        database=postgres_url,
        redis_url=redis_url,
        llm_base_url=fake_llm.base_url,
        env={"SWITCHBOARD_LLM_PROVIDER": "demo"},
    )
    try:
        yield await running.start()
    finally:
        await running.stop()


async def test_the_demo_model_adds_a_task_through_chatkit(demo: Deployment) -> None:
    events = await stream(demo, create("Add a task to buy milk"))
    [called] = [item for item in done_items(events) if isinstance(item, TaskItem)]
    assert called.task.title is not None and called.task.title.startswith("add_task(")
    assert text_of(answer_of(events)).startswith("[demo model]")
    assert any("milk" in title.lower() for title in await tasks_of(demo, "alice"))
