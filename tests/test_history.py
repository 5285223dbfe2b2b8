"""Conversations and history: who owns a conversation, what the model sees, and what is stored.

Conversation ids are opaque strings the client chooses (`X-Conversation-ID`, or Open WebUI's
`X-OpenWebUI-Chat-Id`), scoped per user. A client that sends only its newest message gets the stored
window; a client that sends the whole conversation (Open WebUI) is believed, and only its new turn is
stored. Every test uses markers of its own, so the shared deployment and the shared fake LLM's request
log can be filtered to just that test.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.deployment import Deployment
from tests.fake_llm import FakeLLM

HISTORY_WINDOW = 4


def marker() -> str:
    return uuid.uuid4().hex[:12]


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


async def chat(
    running: Deployment,
    messages: list[dict[str, str]],
    *,
    who: str = "alice",
    headers: dict[str, str] | None = None,
) -> tuple[str, str | None]:
    """One non-streaming turn over plain HTTP: (reply text, X-Conversation-ID header)."""
    async with running.http(who) as client:
        response = await client.post(
            "/v1/chat/completions", json={"model": "assistant", "messages": messages}, headers=headers or {}
        )
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"], response.headers.get("x-conversation-id")


def seen_by_model(fake_llm: FakeLLM, needle: str) -> list[list[dict[str, Any]]]:
    """The message lists of every request the fake LLM received whose last user message contains `needle`."""
    found = []
    for body in fake_llm.requests:
        users = [m for m in body["messages"] if m.get("role") == "user"]
        if users and needle in json.dumps(users[-1]):
            found.append(body["messages"])
    return found


def conversational(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages if m["role"] not in ("system", "developer")]


def stored(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(row["role"], row["content"]) for row in rows]


# ------------------------------------------------------------------ conversation ids


async def test_a_new_conversation_gets_an_id_and_later_turns_continue_it(deployment: Deployment) -> None:
    m = marker()
    reply, key = await chat(deployment, [user(f"first {m}")])
    assert reply == f"echo: first {m}"
    assert key, "a response must name the conversation it created"

    reply, same_key = await chat(deployment, [user(f"second {m}")], headers={"X-Conversation-ID": key})
    assert reply == f"echo: second {m}"
    assert same_key == key

    assert stored(await deployment.messages("alice", key)) == [
        ("user", f"first {m}"),
        ("assistant", f"echo: first {m}"),
        ("user", f"second {m}"),
        ("assistant", f"echo: second {m}"),
    ]


async def test_each_request_without_an_id_starts_its_own_conversation(deployment: Deployment) -> None:
    m = marker()
    _, first = await chat(deployment, [user(f"one {m}")])
    _, second = await chat(deployment, [user(f"two {m}")])
    assert first and second and first != second
    assert stored(await deployment.messages("alice", first)) == [("user", f"one {m}"), ("assistant", f"echo: one {m}")]
    assert stored(await deployment.messages("alice", second)) == [("user", f"two {m}"), ("assistant", f"echo: two {m}")]


@pytest.mark.parametrize("header", ["X-Conversation-ID", "X-OpenWebUI-Chat-Id"])
async def test_client_chosen_ids_are_opaque_strings(deployment: Deployment, header: str) -> None:
    m = marker()
    key = f"Opaque id/{m} with spaces:+=?&%#.~"
    _, returned = await chat(deployment, [user(f"hello {m}")], headers={header: key})
    assert returned == key
    _, returned = await chat(deployment, [user(f"again {m}")], headers={header: key})
    assert returned == key
    rows = await deployment.query("SELECT key FROM conversations WHERE user_id = 'alice' AND key = :key", key=key)
    assert len(rows) == 1
    assert [content for _, content in stored(await deployment.messages("alice", key))] == [
        f"hello {m}",
        f"echo: hello {m}",
        f"again {m}",
        f"echo: again {m}",
    ]


async def test_the_model_sees_the_conversation_named_by_the_open_webui_header(
    deployment: Deployment, fake_llm: FakeLLM
) -> None:
    m = marker()
    key = f"owui-{m}"
    await chat(deployment, [user(f"remember {m}")], headers={"X-OpenWebUI-Chat-Id": key})
    await chat(deployment, [user(f"recall {m}")], headers={"X-OpenWebUI-Chat-Id": key})
    [messages] = seen_by_model(fake_llm, f"recall {m}")
    assert conversational(messages) == [
        ("user", f"remember {m}"),
        ("assistant", f"echo: remember {m}"),
        ("user", f"recall {m}"),
    ]


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_concurrent_first_turns_naming_one_new_conversation_share_it(
    backend: str, deployment: Deployment, sqlite_deployment: Deployment
) -> None:
    running = deployment if backend == "postgres" else sqlite_deployment
    m = marker()
    key = f"race-{m}"
    results = await asyncio.gather(
        *(chat(running, [user(f"racer {i} {m}")], headers={"X-Conversation-ID": key}) for i in range(6))
    )
    assert [reply for reply, _ in results] == [f"echo: racer {i} {m}" for i in range(6)]
    assert {returned for _, returned in results} == {key}
    rows = await running.query("SELECT id FROM conversations WHERE user_id = 'alice' AND key = :key", key=key)
    assert len(rows) == 1
    contents = sorted(content for _, content in stored(await running.messages("alice", key)))
    assert contents == sorted([f"racer {i} {m}" for i in range(6)] + [f"echo: racer {i} {m}" for i in range(6)])


async def test_streaming_responses_name_the_conversation_too(deployment: Deployment) -> None:
    m = marker()
    async with (
        deployment.http("alice") as client,
        client.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": "assistant", "messages": [user(f"[[reply:streamed {m}]]")], "stream": True},
        ) as response,
    ):
        assert response.status_code == 200
        key = response.headers.get("x-conversation-id")
        body = "".join([line async for line in response.aiter_lines()])
    assert key
    assert "[DONE]" in body
    assert stored(await deployment.messages("alice", key)) == [
        ("user", f"[[reply:streamed {m}]]"),
        ("assistant", f"streamed {m}"),
    ]


async def test_two_users_with_the_same_conversation_name_get_separate_conversations(
    deployment: Deployment, fake_llm: FakeLLM
) -> None:
    m = marker()
    name = f"shared-name-{m}"
    headers = {"X-Conversation-ID": name}
    await chat(deployment, [user(f"alice secret {m}")], who="alice", headers=headers)
    _, bob_key = await chat(deployment, [user(f"bob hello {m}")], who="bob", headers=headers)
    assert bob_key == name
    await chat(deployment, [user(f"bob again {m}")], who="bob", headers=headers)
    await chat(deployment, [user(f"alice again {m}")], who="alice", headers=headers)

    rows = await deployment.query("SELECT id, user_id FROM conversations WHERE key = :key ORDER BY user_id", key=name)
    assert [row["user_id"] for row in rows] == ["alice", "bob"]
    assert rows[0]["id"] != rows[1]["id"]

    assert stored(await deployment.messages("alice", name)) == [
        ("user", f"alice secret {m}"),
        ("assistant", f"echo: alice secret {m}"),
        ("user", f"alice again {m}"),
        ("assistant", f"echo: alice again {m}"),
    ]
    assert stored(await deployment.messages("bob", name)) == [
        ("user", f"bob hello {m}"),
        ("assistant", f"echo: bob hello {m}"),
        ("user", f"bob again {m}"),
        ("assistant", f"echo: bob again {m}"),
    ]
    # Every stored row of each conversation belongs to its owner.
    owners = await deployment.query(
        "SELECT DISTINCT c.user_id AS owner, m.user_id AS writer FROM messages m "
        "JOIN conversations c ON c.id = m.conversation_id WHERE c.key = :key",
        key=name,
    )
    assert all(row["owner"] == row["writer"] for row in owners)

    [bob_sees] = seen_by_model(fake_llm, f"bob again {m}")
    assert conversational(bob_sees) == [
        ("user", f"bob hello {m}"),
        ("assistant", f"echo: bob hello {m}"),
        ("user", f"bob again {m}"),
    ]
    [alice_sees] = seen_by_model(fake_llm, f"alice again {m}")
    assert conversational(alice_sees) == [
        ("user", f"alice secret {m}"),
        ("assistant", f"echo: alice secret {m}"),
        ("user", f"alice again {m}"),
    ]


# ------------------------------------------------------------------ the stored window


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def windowed(postgres_url: str, redis_url: str, fake_llm: FakeLLM) -> AsyncIterator[Deployment]:
    running = await Deployment(
        database=postgres_url,
        redis_url=redis_url,
        llm_base_url=fake_llm.base_url,
        env={"SWITCHBOARD_HISTORY_WINDOW": str(HISTORY_WINDOW)},
    ).start()
    yield running
    await running.stop()


async def test_the_worker_sends_the_last_n_stored_messages(windowed: Deployment, fake_llm: FakeLLM) -> None:
    m = marker()
    key = f"window-{m}"
    instructions = system(f"be brief {m}")
    turns = 5
    for n in range(1, turns + 1):
        reply, _ = await chat(windowed, [instructions, user(f"turn {n} {m}")], headers={"X-Conversation-ID": key})
        assert reply == f"echo: turn {n} {m}"

        [messages] = seen_by_model(fake_llm, f"turn {n} {m}")
        everything: list[tuple[str, str]] = []
        for k in range(1, n + 1):
            everything += [("user", f"turn {k} {m}"), ("assistant", f"echo: turn {k} {m}")]
        expected = everything[: 2 * n - 1][-HISTORY_WINDOW:]
        assert conversational(messages) == expected, f"turn {n}"
        # The client's system message leads, once, whatever the window dropped.
        assert messages[0] == instructions, f"turn {n}"
        assert [msg for msg in messages if msg["content"] == instructions["content"]] == [instructions]

    # The window limits what the model sees, not what is kept.
    assert len(await windowed.messages("alice", key)) == 2 * turns


# ------------------------------------------------------------------ Open WebUI: the client sends everything


async def test_a_client_that_sends_the_whole_conversation_is_believed_and_only_the_new_turn_is_stored(
    deployment: Deployment, fake_llm: FakeLLM
) -> None:
    m = marker()
    key = f"owui-full-{m}"
    headers = {"X-OpenWebUI-Chat-Id": key}
    sys_message = system(f"owui system {m}")

    # Turn 1: only one user message, as Open WebUI sends on a new chat.
    first = [sys_message, user(f"q1 {m}")]
    a1, _ = await chat(deployment, first, headers=headers)
    # Turn 2: the whole conversation, with the first answer edited by the user in the client.
    edited = f"edited answer {m}"
    second = [sys_message, user(f"q1 {m}"), assistant(edited), user(f"q2 {m}")]
    a2, _ = await chat(deployment, second, headers=headers)
    # Turn 3: the whole conversation again, as returned.
    third = [*second, assistant(a2), user(f"q3 {m}")]
    a3, _ = await chat(deployment, third, headers=headers)
    assert (a1, a2, a3) == (f"echo: q1 {m}", f"echo: q2 {m}", f"echo: q3 {m}")

    [sees_second] = seen_by_model(fake_llm, f"q2 {m}")
    assert conversational(sees_second) == conversational(second)
    assert sees_second[0] == sys_message
    [sees_third] = seen_by_model(fake_llm, f"q3 {m}")
    assert conversational(sees_third) == conversational(third)

    # Exactly one user and one assistant row per turn: the client's copy of earlier turns is not stored again.
    assert stored(await deployment.messages("alice", key)) == [
        ("user", f"q1 {m}"),
        ("assistant", a1),
        ("user", f"q2 {m}"),
        ("assistant", a2),
        ("user", f"q3 {m}"),
        ("assistant", a3),
    ]
    runs = await deployment.query(
        "SELECT r.id, count(m.id) AS n FROM runs r JOIN conversations c ON c.id = r.conversation_id "
        "LEFT JOIN messages m ON m.run_id = r.id WHERE c.key = :key GROUP BY r.id",
        key=key,
    )
    assert sorted(row["n"] for row in runs) == [2, 2, 2]


async def test_open_webui_background_tasks_are_answered_but_never_stored(
    deployment: Deployment, fake_llm: FakeLLM
) -> None:
    m = marker()
    key = f"owui-task-{m}"
    headers = {"X-OpenWebUI-Chat-Id": key}
    await chat(deployment, [user(f"real question {m}")], headers=headers)
    before = await deployment.messages("alice", key)

    task = f"### Task:\nGenerate a concise title for the chat {m}. [[reply:Title {m}]]"
    reply, _ = await chat(deployment, [user(task)], headers=headers)
    assert reply == f"Title {m}"
    # The model was asked the task itself.
    [sees] = seen_by_model(fake_llm, f"concise title for the chat {m}")
    assert conversational(sees)[-1] == ("user", task)

    assert await deployment.messages("alice", key) == before
    leaked = await deployment.query("SELECT id FROM messages WHERE content LIKE :pattern", pattern=f"%Title {m}%")
    assert leaked == []
    leaked = await deployment.query(
        "SELECT id FROM messages WHERE content LIKE :pattern", pattern=f"%concise title for the chat {m}%"
    )
    assert leaked == []


# ------------------------------------------------------------------ persistence on both databases


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_the_assistant_message_is_stored(
    backend: str, stream: bool, deployment: Deployment, sqlite_deployment: Deployment
) -> None:
    running = deployment if backend == "postgres" else sqlite_deployment
    m = marker()
    key = f"persist-{m}"
    text = f"stored reply {m} " * 5
    client = running.openai("carol")
    if stream:
        chunks = await client.chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": f"[[reply:{text}]]"}],
            stream=True,
            extra_headers={"X-Conversation-ID": key},
        )
        got = "".join([chunk.choices[0].delta.content or "" async for chunk in chunks if chunk.choices])
    else:
        completion = await client.chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": f"[[reply:{text}]]"}],
            extra_headers={"X-Conversation-ID": key},
        )
        got = completion.choices[0].message.content or ""
    assert got == text

    # The answer is stored before the terminal event is published, so it is there as soon as the client is done.
    rows = await running.messages("carol", key)
    assert stored(rows) == [("user", f"[[reply:{text}]]"), ("assistant", text)]
    run_id = rows[1]["run_id"]
    assert run_id and rows[0]["run_id"] == run_id
    [run] = await running.query("SELECT status, attempt, finished_at FROM runs WHERE id = :id", id=run_id)
    assert run["status"] == "succeeded"
    assert run["attempt"] == 1
    assert run["finished_at"] is not None
