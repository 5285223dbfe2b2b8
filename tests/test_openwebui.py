"""Open WebUI's users are Switchboard's users, and its temporary chats are kept nowhere.

One deployment trusts the key `key-openwebui` (its user `openwebui`) as a front end: its requests name
the end user in `X-OpenWebUI-User-Id` (or `X-Switchboard-User`), who is then `openwebui/<id>`. The key
`key-otherui` is an API key like any other, so the same headers from it are ignored. Every test uses
markers of its own, so the shared fake LLM's request log can be filtered to just that test.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import openai
import pytest
import pytest_asyncio

from tests.deployment import JWT_SECRET, USERS, Deployment, running_deployment
from tests.fake_llm import FakeLLM
from tests.test_cli import assert_one_line_naming, base_settings, clean_env, run_switchboard
from tests.test_runs_api import events_of, text_of

TRUSTED_KEY = "key-openwebui"
OTHER_KEY = "key-otherui"
FRONT_END = "openwebui"
MODEL = "assistant"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def owui(postgres_url: str, redis_url: str, fake_llm: FakeLLM) -> AsyncIterator[Deployment]:
    api_keys = [f"{key}={user}" for user, key in USERS.items()] + [f"{TRUSTED_KEY}={FRONT_END}", f"{OTHER_KEY}=otherui"]
    env = {
        "SWITCHBOARD_API_KEYS": ",".join(api_keys),
        "SWITCHBOARD_TRUSTED_FRONTEND_KEYS": TRUSTED_KEY,
        # One run at a time per user: the cap must count each end user apart.
        "SWITCHBOARD_MAX_ACTIVE_RUNS_PER_USER": "1",
    }
    async with running_deployment(
        database=postgres_url, redis_url=redis_url, llm_base_url=fake_llm.base_url, env=env
    ) as running:
        yield running


def marker() -> str:
    return uuid.uuid4().hex[:12]


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def as_end_user(
    running: Deployment, end_user: str | None, *, key: str = TRUSTED_KEY, header: str = "X-OpenWebUI-User-Id"
) -> httpx2.AsyncClient:
    """A client as Open WebUI calls: the front end's key, and the end user in a header."""
    headers = {"Authorization": f"Bearer {key}"}
    if end_user is not None:
        headers[header] = end_user
    return httpx2.AsyncClient(base_url=running.base_url, headers=headers, timeout=60)


async def chat(
    client: httpx2.AsyncClient, messages: list[dict[str, str]], *, chat_id: str | None = None, **headers: str
) -> httpx2.Response:
    if chat_id is not None:
        headers["X-OpenWebUI-Chat-Id"] = chat_id
    response = await client.post("/v1/chat/completions", json={"model": MODEL, "messages": messages}, headers=headers)
    assert response.status_code == 200, response.text
    return response


def reply_of(response: httpx2.Response) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


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


async def whoami(client: httpx2.AsyncClient) -> str:
    response = await client.get("/api/me")
    assert response.status_code == 200, response.text
    return str(response.json()["user_id"])


# ------------------------------------------------------------------ one key, many users


async def test_two_open_webui_users_are_kept_apart(owui: Deployment, fake_llm: FakeLLM) -> None:
    m = marker()
    ann, ben = f"ann-{m}", f"ben-{m}"
    # The same chat id for both, so only the user can tell the conversations apart.
    chat_id = f"chat-{m}"
    async with as_end_user(owui, ann) as ann_http, as_end_user(owui, ben) as ben_http, owui.http(None) as anon:
        assert await whoami(ann_http) == f"{FRONT_END}/{ann}"
        # Open WebUI's own client is the OpenAI SDK; so is this one.
        sdk = openai.AsyncOpenAI(
            base_url=f"{owui.base_url}/v1",
            api_key=TRUSTED_KEY,
            max_retries=0,
            default_headers={"X-OpenWebUI-User-Id": ann, "X-OpenWebUI-Chat-Id": chat_id},
        )
        raw = await sdk.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": f"ann's secret {m}"}]
        )
        ann_run = raw.headers["x-run-id"]
        assert raw.headers["x-conversation-id"] == chat_id
        assert raw.parse().choices[0].message.content == f"echo: ann's secret {m}"
        await sdk.close()

        # Ben sends only his newest message: the stored window he gets is his own, which is empty.
        ben_reply = await chat(ben_http, [user(f"ben asks {m}")], chat_id=chat_id)
        ben_run = ben_reply.headers["x-run-id"]
        [seen] = seen_by_model(fake_llm, f"ben asks {m}")
        assert conversational(seen) == [("user", f"ben asks {m}")]

        rows = await owui.query(
            "SELECT c.user_id, m.role, m.content FROM conversations c JOIN messages m ON m.conversation_id = c.id "
            "WHERE c.key = :key ORDER BY m.id",
            key=chat_id,
        )
        assert [(row["user_id"], row["role"]) for row in rows] == [
            (f"{FRONT_END}/{ann}", "user"),
            (f"{FRONT_END}/{ann}", "assistant"),
            (f"{FRONT_END}/{ben}", "user"),
            (f"{FRONT_END}/{ben}", "assistant"),
        ]

        # The runs API: each sees their own run only; the other's is missing.
        ann_runs = (await ann_http.get("/v1/runs", params={"conversation_id": chat_id})).json()["data"]
        assert [run["id"] for run in ann_runs] == [ann_run]
        assert (await ann_http.get(f"/v1/runs/{ben_run}")).status_code == 404
        assert (await ben_http.get(f"/v1/runs/{ann_run}")).status_code == 404
        assert (await ben_http.post(f"/v1/runs/{ann_run}/cancel")).status_code == 404
        # Nor is either the front end's own (its key without a user header).
        async with as_end_user(owui, None) as front_end:
            assert await whoami(front_end) == FRONT_END
            assert (await front_end.get(f"/v1/runs/{ann_run}")).status_code == 404
            assert (await front_end.get("/v1/runs", params={"conversation_id": chat_id})).json()["data"] == []

        # The todo API: `me` stands for the caller, whose id has a `/` no path segment can hold.
        ann_listed = (await ann_http.get("/api/me/conversations")).json()["data"]
        assert [conversation["id"] for conversation in ann_listed] == [chat_id]
        ben_messages = (await ben_http.get(f"/api/me/conversations/{chat_id}/messages")).json()["data"]
        assert [message["content"] for message in ben_messages] == [f"ben asks {m}", f"echo: ben asks {m}"]
        assert (await ann_http.get(f"/api/{FRONT_END}/conversations")).status_code == 403
        # The user's id in a path does not route, raw or encoded: `/` splits the path either way.
        for path_user in (f"{FRONT_END}/{ann}", f"{FRONT_END}%2F{ann}"):
            assert (await ann_http.get(f"/api/{path_user}/conversations")).status_code == 404
        # Nobody else's `me` is anyone else's: alice's is alice's.
        async with owui.http("alice") as alice:
            assert (await alice.get(f"/api/me/conversations/{chat_id}/messages")).status_code == 404

        # ChatKit: a thread is a conversation, and Ann's list holds hers.
        threads = await ann_http.post("/chatkit", json={"type": "threads.list", "params": {"limit": 100}})
        assert threads.status_code == 200, threads.text
        assert chat_id in [thread["id"] for thread in threads.json()["data"]]
        assert (await anon.get("/api/me")).status_code == 401


async def test_idempotency_keys_and_the_active_run_cap_are_per_end_user(owui: Deployment) -> None:
    m = marker()
    ann, ben = f"ann-{m}", f"ben-{m}"
    async with as_end_user(owui, ann) as ann_http, as_end_user(owui, ben) as ben_http:
        key = {"Idempotency-Key": f"retry-{m}"}
        first = await chat(ann_http, [user(f"[[reply:once {m}]]")], **key)
        again = await chat(ann_http, [user(f"[[reply:once {m}]]")], **key)
        other = await chat(ben_http, [user(f"[[reply:once {m}]]")], **key)
        assert first.headers["x-run-id"] == again.headers["x-run-id"] != other.headers["x-run-id"]

        # The deployment allows one unfinished run per user: Ann's slow one is hers alone.
        body = {"model": MODEL, "messages": [user(f"[[delay:2]][[reply:slow {m}]]")], "stream": True}
        async with ann_http.stream("POST", "/v1/chat/completions", json=body) as slow:
            assert slow.status_code == 200
            busy = await ann_http.post("/v1/chat/completions", json={"model": MODEL, "messages": [user("more")]})
            assert busy.status_code == 429, busy.text
            assert busy.json()["error"]["code"] == "too_many_active_runs"
            assert reply_of(await chat(ben_http, [user(f"[[reply:free {m}]]")])) == f"free {m}"
            slow_run = slow.headers["x-run-id"]
        assert await owui.wait_for("SELECT id FROM runs WHERE id = :id AND status = 'succeeded'", id=slow_run)


async def test_the_generic_header_names_the_user_too(owui: Deployment) -> None:
    m = marker()
    async with as_end_user(owui, f"sam-{m}", header="X-Switchboard-User") as http:
        assert await whoami(http) == f"{FRONT_END}/sam-{m}"
        # Both headers naming the same user is one user; naming two is refused.
        same = await http.get("/api/me", headers={"X-OpenWebUI-User-Id": f"sam-{m}"})
        assert same.json() == {"user_id": f"{FRONT_END}/sam-{m}"}
        both = await http.get("/api/me", headers={"X-OpenWebUI-User-Id": f"other-{m}"})
        assert both.status_code == 400, both.text


async def test_mcp_and_the_todo_api_act_for_the_end_user(owui: Deployment) -> None:
    m = marker()
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "add_task", "arguments": {"title": f"task of {m}"}},
    }
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with as_end_user(owui, f"ann-{m}") as ann_http, as_end_user(owui, f"ben-{m}") as ben_http:
        added = await ann_http.post("/mcp", json=call, headers=headers)
        assert added.status_code == 200, added.text
        assert not added.json()["result"].get("isError"), added.text
        ann_tasks = (await ann_http.get("/api/me/tasks")).json()["data"]
        assert [task["title"] for task in ann_tasks] == [f"task of {m}"]
        assert (await ben_http.get("/api/me/tasks")).json()["data"] == []
        async with as_end_user(owui, None) as front_end:
            assert f"task of {m}" not in json.dumps((await front_end.get("/api/me/tasks")).json())


# ------------------------------------------------------------------ untrusted credentials


async def test_the_headers_from_an_untrusted_key_or_a_token_are_ignored_and_logged_once(owui: Deployment) -> None:
    m = marker()
    chat_id = f"other-{m}"
    async with as_end_user(owui, f"ann-{m}", key=OTHER_KEY) as other:
        assert await whoami(other) == "otherui"
        await chat(other, [user(f"hello {m}")], chat_id=chat_id)
        # Ignored means not even checked: a value a trusted key would be refused is no error here.
        assert (await other.get("/api/me", headers={"X-OpenWebUI-User-Id": "not/valid"})).status_code == 200
        assert await whoami(other) == "otherui"
    rows = await owui.query("SELECT user_id FROM conversations WHERE key = :key", key=chat_id)
    assert [row["user_id"] for row in rows] == ["otherui"]

    async with as_end_user(owui, f"ann-{m}", key=USERS["bob"], header="X-Switchboard-User") as bob:
        assert await whoami(bob) == "bob"
    token = jwt.encode({"sub": f"jwt-{m}", "exp": int(time.time()) + 60}, JWT_SECRET, algorithm="HS256")
    async with as_end_user(owui, f"ann-{m}", key=token) as jwt_user:
        assert await whoami(jwt_user) == f"jwt-{m}"

    ignored = [
        json.loads(line)
        for line in owui.log_text("api").splitlines()
        if "auth.end_user_header_ignored" in line and line.startswith("{")
    ]
    assert [entry["user_id"] for entry in ignored].count("otherui") == 1
    assert [entry["user_id"] for entry in ignored].count("bob") == 1
    assert [entry["user_id"] for entry in ignored].count(f"jwt-{m}") == 1
    assert OTHER_KEY not in owui.log_text("api")


async def test_a_token_cannot_claim_a_front_ends_user(owui: Deployment) -> None:
    token = jwt.encode({"sub": f"{FRONT_END}/ann", "exp": int(time.time()) + 60}, JWT_SECRET, algorithm="HS256")
    async with as_end_user(owui, None, key=token) as http:
        response = await http.get("/api/me")
    assert response.status_code == 401, response.text


# ------------------------------------------------------------------ malformed end users

BAD_END_USERS = {
    "empty": "",
    "slash": "a/b",
    "space": "a b",
    "tab": "a\tb",
    "too long": "x" * 129,
    "non-ASCII": "j\u00e9r\u00f4me",
}
# Every surface that authenticates: (method, path, JSON body or None).
SURFACES = {
    "models": ("GET", "/v1/models", None),
    "chat completions": ("POST", "/v1/chat/completions", {"model": MODEL, "messages": [user("hi")]}),
    "runs": ("GET", "/v1/runs", None),
    "todo": ("GET", "/api/me/tasks", None),
    "chatkit": ("POST", "/chatkit", {"type": "threads.list", "params": {}}),
    "mcp": ("POST", "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}),
}


@pytest.mark.parametrize("case", list(BAD_END_USERS))
async def test_a_malformed_end_user_is_a_400_naming_the_header(owui: Deployment, case: str) -> None:
    value = BAD_END_USERS[case]
    async with as_end_user(owui, None) as http:
        # Sent as bytes: HTTP header values are bytes, and a client may send any.
        response = await http.get("/v1/models", headers={"X-OpenWebUI-User-Id": value.encode()})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "X-OpenWebUI-User-Id"
    assert "1 to 128 characters" in error["message"]


@pytest.mark.parametrize("surface", list(SURFACES))
async def test_every_surface_knows_the_end_user(owui: Deployment, surface: str) -> None:
    method, path, body = SURFACES[surface]
    headers = {"Accept": "application/json, text/event-stream"}
    async with as_end_user(owui, "bad user") as bad, as_end_user(owui, f"ok-{marker()}") as good:
        refused = await bad.request(method, path, json=body, headers=headers)
        assert refused.status_code == 400, refused.text
        accepted = await good.request(method, path, json=body, headers=headers)
        assert accepted.status_code == 200, accepted.text
    # Credentials are checked first: a bad key is 401 whatever the header says.
    async with as_end_user(owui, "bad user", key="key-mallory") as unknown:
        assert (await unknown.request(method, path, json=body, headers=headers)).status_code == 401


# ------------------------------------------------------------------ temporary and local chats


@pytest.mark.parametrize("prefix", ["temporary:", "local:"])
async def test_temporary_and_local_chats_are_answered_and_never_stored(
    owui: Deployment, fake_llm: FakeLLM, prefix: str
) -> None:
    m = marker()
    end_user = f"tmp-{m}"
    # Open WebUI names every temporary chat of one browser tab after the tab's socket.
    chat_id = f"{prefix}socket-{m}"
    async with as_end_user(owui, end_user) as http:
        first = await chat(http, [user(f"first chat {m}")], chat_id=chat_id)
        assert reply_of(first) == f"echo: first chat {m}"
        assert "x-conversation-id" not in first.headers

        # A second temporary chat from the same tab: it must not see the first.
        second = await chat(http, [user(f"second chat {m}")], chat_id=chat_id)
        assert reply_of(second) == f"echo: second chat {m}"
        [seen] = seen_by_model(fake_llm, f"second chat {m}")
        assert conversational(seen) == [("user", f"second chat {m}")]

        # A later turn of a temporary chat: the client's messages are the whole history.
        history = [user(f"first chat {m}"), assistant(f"echo: first chat {m}"), user(f"follow-up {m}")]
        follow_up = await chat(http, history, chat_id=chat_id)
        [seen] = seen_by_model(fake_llm, f"follow-up {m}")
        assert conversational(seen) == [(message["role"], message["content"]) for message in history]

        # Streaming, through the OpenAI SDK as Open WebUI calls.
        sdk = openai.AsyncOpenAI(
            base_url=f"{owui.base_url}/v1",
            api_key=TRUSTED_KEY,
            max_retries=0,
            default_headers={"X-OpenWebUI-User-Id": end_user, "X-OpenWebUI-Chat-Id": chat_id},
        )
        stream = await sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"streamed {m}"}], stream=True
        )
        streamed = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
        assert streamed == f"echo: streamed {m}"
        await sdk.close()

        # Nothing stored: no conversation, no message, and the runs keep no input once they ended.
        assert await owui.query("SELECT id FROM conversations WHERE user_id = :u", u=f"{FRONT_END}/{end_user}") == []
        assert await owui.query("SELECT id FROM messages WHERE content LIKE :p", p=f"%{m}%") == []
        assert (await http.get("/api/me/conversations")).json()["data"] == []
        # Each run ended before its answer reached the client, and kept nothing of what it was given.
        runs = await owui.query(
            "SELECT conversation_id, spec, status FROM runs WHERE user_id = :u", u=f"{FRONT_END}/{end_user}"
        )
        assert [(run["conversation_id"], run["spec"], run["status"]) for run in runs] == [(None, None, "succeeded")] * 4

        # The runs API shows them as runs of no conversation, and replays what they said.
        run_id = follow_up.headers["x-run-id"]
        shown = (await http.get(f"/v1/runs/{run_id}")).json()
        assert (shown["status"], shown["conversation_id"]) == ("succeeded", None)
        listed = (await http.get("/v1/runs")).json()["data"]
        assert len(listed) == 4 and all(run["conversation_id"] is None for run in listed)
        assert text_of(await events_of(http, run_id)) == f"echo: follow-up {m}"


async def test_a_named_conversation_wins_over_a_temporary_chat_id(owui: Deployment) -> None:
    m = marker()
    async with as_end_user(owui, f"named-{m}") as http:
        response = await chat(
            http, [user(f"keep me {m}")], chat_id=f"temporary:socket-{m}", **{"X-Conversation-ID": f"mine-{m}"}
        )
        assert response.headers["x-conversation-id"] == f"mine-{m}"
    stored = await owui.messages(f"{FRONT_END}/named-{m}", f"mine-{m}")
    assert [row["content"] for row in stored] == [f"keep me {m}", f"echo: keep me {m}"]


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("case", "api_keys", "trusted"),
    [
        ("not an API key", "some-key=someone", "secret-frontend-key"),
        ("one of two is not", "some-key=someone", "some-key,secret-frontend-key"),
        ("a key stands for one of its users", "some-key=openwebui,other-key=openwebui/u-1", "some-key"),
    ],
)
async def test_a_bad_trusted_key_stops_the_api_at_start_up(
    tmp_path: Path, case: str, api_keys: str, trusted: str
) -> None:
    settings = {
        **base_settings(tmp_path),
        "SWITCHBOARD_API_KEYS": api_keys,
        "SWITCHBOARD_TRUSTED_FRONTEND_KEYS": trusted,
    }
    code, stdout, stderr = await run_switchboard("api", "--port", "1", env=clean_env(**settings), cwd=tmp_path)
    assert_one_line_naming(code, stdout, stderr, "SWITCHBOARD_TRUSTED_FRONTEND_KEYS")
    # The line says which key by its place, never by its value.
    assert "secret-frontend-key" not in stderr, case
