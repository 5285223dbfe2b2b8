"""Input no database can store, numbers and cursors nobody wrote, ids sent three ways: each is a clear
4xx in our error shape, never a 5xx, on every surface that takes it.

These are the classes the fuzz run found (tests/test_fuzz.py goes wider); each case here names one.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx2
import pytest

from tests.deployment import Deployment

CHAT = "/v1/chat/completions"


def marker() -> str:
    return uuid.uuid4().hex[:8]


def cursor(*parts: Any) -> str:
    """A cursor in our encoding, holding whatever a client chose to put in it."""
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


def assert_client_error(response: httpx2.Response, status: int, *, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    error = response.json()["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    if param is not None:
        assert error["param"] == param, error
    return dict(error)


def chat_body(text: str = "[[reply:ok]]") -> dict[str, Any]:
    return {"model": "assistant", "messages": [{"role": "user", "content": text}]}


# Raw JSON text, since `json.dumps` would never write these: a NUL, and a lone surrogate as JSON spells it.
NUL = "\\u0000"
SURROGATE = "\\ud800"


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "surrogate"])
async def test_unstorable_text_in_a_todo_turn_is_422(deployment: Deployment, bad: str) -> None:
    async with deployment.http() as client:
        for raw in (
            f'{{"message": "a{bad}b"}}',
            f'{{"message": "hi", "conversation_id": "a{bad}b"}}',
        ):
            response = await client.post(
                "/api/alice/chat", content=raw.encode(), headers={"Content-Type": "application/json"}
            )
            assert_client_error(response, 422)


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "surrogate"])
async def test_unstorable_text_anywhere_in_a_chat_body_is_400_naming_where(deployment: Deployment, bad: str) -> None:
    raw = f'{{"model": "assistant", "messages": [{{"role": "user", "content": "hi"}}], "user": "x{bad}"}}'
    async with deployment.http() as client:
        response = await client.post(CHAT, content=raw.encode(), headers={"Content-Type": "application/json"})
    assert_client_error(response, 400, param="user")


async def test_a_number_json_cannot_hold_is_400(deployment: Deployment) -> None:
    raw = b'{"model": "assistant", "messages": [{"role": "user", "content": "hi"}], "temperature": 1e400}'
    async with deployment.http() as client:
        response = await client.post(CHAT, content=raw, headers={"Content-Type": "application/json"})
    assert_client_error(response, 400)


@pytest.mark.parametrize("path", ["/api/alice/conversations/a%00b", "/api/alice/conversations/a%00b/messages"])
async def test_nul_in_a_conversation_path_is_400(deployment: Deployment, path: str) -> None:
    async with deployment.http() as client:
        for method in ("GET", "DELETE"):
            response = await client.request(method, path)
            if response.status_code == 405:
                continue
            assert_client_error(response, 400, param="conversation_id")


LISTS = [
    "/api/alice/tasks",
    "/api/alice/conversations",
    "/v1/runs",
]


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("limit", ["²", "٣", "-1", "0", "1" * 40, "1.5", " "])
async def test_a_limit_that_is_not_a_small_whole_number_is_400(deployment: Deployment, path: str, limit: str) -> None:
    async with deployment.http() as client:
        response = await client.get(path, params={"limit": limit})
    if limit.strip() == "":
        # An empty limit is no limit at all on some lists; whatever it is, it is not a crash.
        assert response.status_code < 500, response.text
        return
    assert_client_error(response, 400, param="limit")


FOREIGN_CURSORS = {
    "text": cursor("abc"),
    "list": cursor([1]),
    "infinite": base64.urlsafe_b64encode(b"[1e400]").decode().rstrip("="),
    "past_bigint": cursor(10**25),
    "nan": base64.urlsafe_b64encode(b"[NaN]").decode().rstrip("="),
    "pair_of_junk": cursor([1], {"a": 1}),
    "nul_time": cursor("2026-01-01\u0000", 1),
    "not_base64": "%%%",
    "not_json": base64.urlsafe_b64encode(b"\xff\xfe").decode(),
}


@pytest.mark.parametrize("name", list(FOREIGN_CURSORS))
async def test_a_cursor_we_did_not_write_is_400(deployment: Deployment, name: str) -> None:
    key = f"cursor-{marker()}"
    async with deployment.http() as client:
        made = await client.post(CHAT, json=chat_body(), headers={"X-Conversation-ID": key})
        assert made.status_code == 200, made.text
        for path, param in (
            ("/api/alice/tasks", "cursor"),
            ("/api/alice/conversations", "cursor"),
            (f"/api/alice/conversations/{key}/messages", "cursor"),
            ("/v1/runs", "after"),
        ):
            response = await client.get(path, params={param: FOREIGN_CURSORS[name]})
            assert_client_error(response, 400, param=param)


@pytest.mark.parametrize("given", ["²", "1" * 30, "-3", "x"])
async def test_an_event_position_that_is_not_a_whole_number_is_400(deployment: Deployment, given: str) -> None:
    async with deployment.http() as client:
        made = await client.post(CHAT, json=chat_body())
        run_id = made.headers["X-Run-ID"]
        response = await client.get(f"/v1/runs/{run_id}/events", params={"after": given})
        assert_client_error(response, 400, param="after")
        response = await client.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": given.encode()})
        assert_client_error(response, 400, param="Last-Event-ID")


@pytest.mark.parametrize("key", ["a/b", "x/messages", "/lead", "%2F"])
async def test_an_id_with_a_slash_can_be_read_and_deleted_through_the_paths(deployment: Deployment, key: str) -> None:
    key = f"{key}-{marker()}"
    encoded = key.replace("%", "%25").replace("/", "%2F")
    async with deployment.http() as client:
        made = await client.post(CHAT, json=chat_body(), headers={"X-Conversation-ID": key})
        assert made.status_code == 200, made.text
        # As it is, or percent-encoded (a `%` in a path is always an escape, so then only encoded).
        for path in (key, encoded) if "%" not in key else (encoded,):
            messages = await client.get(f"/api/alice/conversations/{path}/messages")
            assert messages.status_code == 200, messages.text
            assert [message["role"] for message in messages.json()["data"]] == ["user", "assistant"]
        turn = await client.post("/api/alice/chat", json={"message": "[[reply:again]]", "conversation_id": key})
        assert turn.status_code == 200, turn.text
        deleted = await client.delete(f"/api/alice/conversations/{encoded}")
        assert deleted.status_code == 204, deleted.text
        gone = await client.get(f"/api/alice/conversations/{encoded}/messages")
        assert_client_error(gone, 404)


async def test_control_characters_in_an_id_are_refused_however_it_arrives(deployment: Deployment) -> None:
    async with deployment.http() as client:
        response = await client.post(CHAT, json=chat_body(), headers={"X-Conversation-ID": "a\tb"})
        assert_client_error(response, 400, param="x-conversation-id")
        response = await client.post("/api/alice/chat", json={"message": "hi", "conversation_id": "a\x01b"})
        assert_client_error(response, 422, param="conversation_id")
        response = await client.get("/api/alice/conversations/a%01b/messages")
        assert_client_error(response, 400, param="conversation_id")


async def test_a_non_ascii_id_is_the_same_in_a_header_a_body_and_a_path(deployment: Deployment) -> None:
    key = f"café-日本-{marker()}"
    async with deployment.http() as client:
        made = await client.post(CHAT, json=chat_body(), headers={"X-Conversation-ID": key.encode()})
        assert made.status_code == 200, made.text
        assert made.headers.raw and made.headers["X-Conversation-ID"] == key
        listed = await client.get("/api/alice/conversations", params={"limit": 200})
        assert key in [item["id"] for item in listed.json()["data"]]
        messages = await client.get(f"/api/alice/conversations/{key}/messages")
        assert messages.status_code == 200, messages.text
        assert [message["role"] for message in messages.json()["data"]] == ["user", "assistant"]
        # The todo API finds it by the same id in its body.
        turn = await client.post("/api/alice/chat", json={"message": "[[reply:again]]", "conversation_id": key})
        assert turn.status_code == 200, turn.text
        assert turn.json()["conversation_id"] == key


async def test_a_header_id_that_is_not_utf8_is_400(deployment: Deployment) -> None:
    async with deployment.http() as client:
        response = await client.post(CHAT, json=chat_body(), headers={"X-Conversation-ID": b"caf\xe9"})
    assert_client_error(response, 400, param="x-conversation-id")


async def test_a_key_followed_by_a_no_break_space_is_another_key(deployment: Deployment) -> None:
    async with httpx2.AsyncClient(base_url=deployment.base_url) as client:
        response = await client.get("/v1/models", headers={"Authorization": b"Bearer key-alice\xa0"})
        assert_client_error(response, 401)
        # The spaces and tabs HTTP allows around a value are still fine.
        response = await client.get("/v1/models", headers={"Authorization": b"Bearer \tkey-alice"})
        assert response.status_code == 200, response.text


def chatkit(kind: str, **params: Any) -> dict[str, Any]:
    return {"type": kind, "params": params}


def user_input(text: str) -> dict[str, Any]:
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": [],
        "inference_options": {},
    }


async def test_chatkit_refuses_unstorable_titles_and_messages_before_it_streams(deployment: Deployment) -> None:
    async with deployment.http() as client:
        created = await client.post("/chatkit", json=chatkit("threads.create", input=user_input("[[reply:ok]]")))
        assert created.status_code == 200, created.text
        thread_id = _thread_id(created.text)
        cases = [
            json.dumps(chatkit("threads.update", thread_id=thread_id, title="x")).replace('"x"', f'"a{NUL}"'),
            json.dumps(chatkit("threads.create", input=user_input("x"))).replace('"x"', f'"hi{NUL}"'),
            json.dumps(chatkit("threads.create", input=user_input("x"))).replace('"x"', f'"hi{SURROGATE}"'),
            json.dumps(chatkit("threads.get_by_id", thread_id="x")).replace('"x"', f'"a{NUL}b"'),
            json.dumps(chatkit("threads.list", limit=5, metadata={"x": 1})).replace('"x"', f'"{SURROGATE}"'),
        ]
        for raw in cases:
            response = await client.post("/chatkit", content=raw.encode(), headers={"Content-Type": "application/json"})
            assert_client_error(response, 400)
        title = await client.post("/chatkit", json=chatkit("threads.update", thread_id=thread_id, title="t" * 300))
        assert_client_error(title, 400, param="params.title")


def _thread_id(stream: str) -> str:
    for line in stream.splitlines():
        if line.startswith("data:"):
            event = json.loads(line[5:])
            if event.get("type") == "thread.created":
                return str(event["thread"]["id"])
    raise AssertionError(f"no thread.created event in {stream[:500]}")


async def test_a_model_that_writes_nul_is_stored_with_a_replacement_character(deployment: Deployment) -> None:
    key = f"nul-{marker()}"
    async with deployment.http() as client:
        response = await client.post(
            CHAT, json=chat_body("[[reply:before<NUL>after]]"), headers={"X-Conversation-ID": key}
        )
        assert response.status_code == 200, response.text
        # The client hears what the model said; the history keeps what a database can hold.
        assert response.json()["choices"][0]["message"]["content"] == "before\x00after"
        messages = await client.get(f"/api/alice/conversations/{key}/messages")
    assert messages.json()["data"][-1]["content"] == "before\ufffdafter"
