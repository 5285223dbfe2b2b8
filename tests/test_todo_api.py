"""The todo assistant's HTTP API: who may call what, in which order errors come, and the UI lists."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.deployment import Deployment


def marker() -> str:
    return uuid.uuid4().hex[:8]


def assert_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert {"message", "type", "code"} <= set(error)
    return dict(error)


async def make_conversation(deployment: Deployment, user: str, key: str, text: str = "[[reply:ok]]") -> None:
    async with deployment.http(user) as http:
        response = await http.post(
            "/v1/chat/completions",
            headers={"X-Conversation-ID": key},
            json={"model": "assistant", "messages": [{"role": "user", "content": text}]},
        )
    assert response.status_code == 200, response.text


async def test_me_names_the_caller(deployment: Deployment) -> None:
    async with deployment.http("bob") as http:
        assert (await http.get("/api/me")).json() == {"user_id": "bob"}
    async with deployment.http(None) as http:
        assert_error(await http.get("/api/me"), 401)


@pytest.mark.parametrize(
    ("user", "path_user", "body", "status"),
    [
        (None, "alice", b"not json", 401),  # credentials first, whatever else is wrong
        (None, "bob", {"message": "hi"}, 401),
        ("alice", "bob", b"not json", 403),  # then the path must name the caller
        ("alice", "bob", {"message": "hi"}, 403),
        ("alice", "alice", b"not json", 422),  # then the body
        ("alice", "alice", {}, 422),
        ("alice", "alice", {"message": ""}, 422),
        ("alice", "alice", {"message": "   "}, 422),
        ("alice", "alice", {"message": "x" * 4001}, 422),
        ("alice", "alice", {"message": 5}, 422),
        ("alice", "alice", {"message": "hi", "conversation_id": ["a"]}, 422),
        ("alice", "alice", {"message": "hi", "conversation_id": True}, 422),
        ("alice", "alice", [1, 2], 422),
        ("alice", "alice", {"message": "hi", "conversation_id": "never-made"}, 404),  # then the conversation
        ("alice", "alice", {"message": "hi", "conversation_id": 987654321}, 404),
    ],
)
async def test_chat_errors_come_in_order(
    deployment: Deployment, user: str | None, path_user: str, body: Any, status: int
) -> None:
    async with deployment.http(user) as http:
        if isinstance(body, bytes):
            response = await http.post(f"/api/{path_user}/chat", content=body)
        else:
            response = await http.post(f"/api/{path_user}/chat", json=body)
    assert_error(response, status)


async def test_another_users_conversation_is_missing(deployment: Deployment) -> None:
    key = f"bobs-{marker()}"
    await make_conversation(deployment, "bob", key)
    async with deployment.http("alice") as http:
        chat = await http.post("/api/alice/chat", json={"message": "hi", "conversation_id": key})
        messages = await http.get(f"/api/alice/conversations/{key}/messages")
        deleted = await http.delete(f"/api/alice/conversations/{key}")
        listed = await http.get("/api/alice/conversations", params={"limit": 200})
    for response in (chat, messages, deleted):
        assert_error(response, 404)
    assert key not in [item["id"] for item in listed.json()["data"]]
    assert len(await deployment.messages("bob", key)) == 2  # bob's conversation is untouched


async def test_conversations_are_listed_newest_first_with_a_cursor(deployment: Deployment) -> None:
    keys = [f"listed-{marker()}-{index}" for index in range(3)]
    for key in keys:
        await make_conversation(deployment, "carol", key)
    seen: list[str] = []
    cursor = None
    async with deployment.http("carol") as http:
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await http.get("/api/carol/conversations", params=params)).json()
            assert len(page["data"]) <= 2
            seen.extend(item["id"] for item in page["data"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        bad_cursor = await http.get("/api/carol/conversations", params={"cursor": "nonsense!"})
        bad_limit = await http.get("/api/carol/conversations", params={"limit": "0"})
    assert [key for key in seen if key in keys] == list(reversed(keys))
    assert len(seen) == len(set(seen))
    assert_error(bad_cursor, 400)
    assert_error(bad_limit, 400)


async def test_messages_and_delete(deployment: Deployment) -> None:
    key = f"to-delete-{marker()}"
    await make_conversation(deployment, "alice", key, "[[reply:first answer]]")
    async with deployment.http("alice") as http:
        messages = (await http.get(f"/api/alice/conversations/{key}/messages")).json()["data"]
        assert [(m["role"], m["content"]) for m in messages] == [
            ("user", "[[reply:first answer]]"),
            ("assistant", "first answer"),
        ]
        assert all(m["tool_calls"] == [] for m in messages)
        deleted = await http.delete(f"/api/alice/conversations/{key}")
        assert deleted.status_code == 204 and deleted.content == b""
        assert_error(await http.get(f"/api/alice/conversations/{key}/messages"), 404)
        assert_error(await http.delete(f"/api/alice/conversations/{key}"), 404)
    assert await deployment.messages("alice", key) == []
    runs = await deployment.query(
        "SELECT count(*) AS n FROM runs r JOIN conversations c ON c.id = r.conversation_id WHERE c.key = :key", key=key
    )
    assert runs[0]["n"] == 0
