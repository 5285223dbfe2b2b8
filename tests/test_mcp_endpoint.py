"""`/mcp` as an external MCP client sees it, through the `mcp` SDK's own streamable HTTP client.

Most tests use a deployment of their own, so task numbers start at 1 for every user and isolation can
be checked exactly; it also names an extra allowed host, as compose or a proxy would. The default host
rules are checked on the shared deployment.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
import pytest_asyncio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from tests.deployment import USERS, Deployment
from tests.fake_llm import FakeLLM

TOOLS = {"add_task", "list_tasks", "complete_task", "delete_task", "update_task"}
PROXY_HOST = "todo.internal"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mcp_deployment(postgres_url: str, redis_url: str, fake_llm: FakeLLM) -> AsyncIterator[Deployment]:
    running = Deployment(
        database=postgres_url,
        redis_url=redis_url,
        llm_base_url=fake_llm.base_url,
        env={"SWITCHBOARD_MCP_ALLOWED_HOSTS": f"127.0.0.1:*,localhost:*,{PROXY_HOST}"},
        start_worker=False,
    )
    try:
        yield await running.start()
    finally:
        await running.stop()


@asynccontextmanager
async def mcp_client(running: Deployment, user: str, *, mode: str = "auto") -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {USERS[user]}"}, timeout=30) as http,
        Client(streamable_http_client(f"{running.base_url}/mcp", http_client=http), mode=mode) as client,
    ):
        yield client


def payload(result: CallToolResult) -> Any:
    [content] = result.content
    assert isinstance(content, TextContent)
    return content.text if result.is_error else json.loads(content.text)


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result
    return payload(result)


async def call_error(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result
    return str(payload(result))


# ------------------------------------------------------------------ tools


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_lists_the_five_tools_and_none_takes_a_user(mcp_deployment: Deployment, mode: str) -> None:
    async with mcp_client(mcp_deployment, "carol", mode=mode) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert not {"user", "user_id", "userId"} & set(tool.input_schema.get("properties", {})), tool.name
    assert tools["add_task"].input_schema["required"] == ["title"]
    assert tools["list_tasks"].input_schema["properties"]["status"]["enum"] == ["all", "pending", "completed"]


async def test_every_tool_does_what_it_says(mcp_deployment: Deployment) -> None:
    async with mcp_client(mcp_deployment, "alice") as client:
        first = await call(client, "add_task", title="  Buy groceries ", description="milk, eggs")
        assert first == {"task_id": 1, "status": "created", "title": "Buy groceries"}
        second = await call(client, "add_task", title="Pay bills")
        assert second == {"task_id": 2, "status": "created", "title": "Pay bills"}

        listed = await call(client, "list_tasks")
        assert [(task["id"], task["title"], task["description"], task["completed"]) for task in listed] == [
            (1, "Buy groceries", "milk, eggs", False),
            (2, "Pay bills", None, False),
        ]
        assert set(listed[0]) == {"id", "title", "description", "completed", "created_at"}

        done = await call(client, "complete_task", task_id=1)
        assert done == {"task_id": 1, "status": "completed", "title": "Buy groceries"}
        assert [task["id"] for task in await call(client, "list_tasks", status="pending")] == [2]
        assert [task["id"] for task in await call(client, "list_tasks", status="completed")] == [1]

        updated = await call(client, "update_task", task_id=2, title="Pay the bills", description="by Friday")
        assert updated == {"task_id": 2, "status": "updated", "title": "Pay the bills"}
        deleted = await call(client, "delete_task", task_id=1)
        assert deleted == {"task_id": 1, "status": "deleted", "title": "Buy groceries"}

        # Numbers are never handed out twice, even after a delete.
        assert (await call(client, "add_task", title="Walk the dog"))["task_id"] == 3
        assert [(task["id"], task["title"]) for task in await call(client, "list_tasks", status="all")] == [
            (2, "Pay the bills"),
            (3, "Walk the dog"),
        ]

    rows = await mcp_deployment.query(
        "SELECT number, title, description, completed FROM tasks WHERE user_id = 'alice' ORDER BY number"
    )
    assert rows == [
        {"number": 2, "title": "Pay the bills", "description": "by Friday", "completed": False},
        {"number": 3, "title": "Walk the dog", "description": None, "completed": False},
    ]
    # Calls from external clients belong to no run and are not recorded.
    assert await mcp_deployment.query("SELECT id FROM tool_calls") == []


async def test_bad_input_and_missing_tasks_are_tool_errors(mcp_deployment: Deployment) -> None:
    async with mcp_client(mcp_deployment, "carol") as client:
        assert await call_error(client, "add_task", title="   ") == "the title must not be empty"
        assert "at most 200" in await call_error(client, "add_task", title="x" * 201)
        assert "at most 2000" in await call_error(client, "add_task", title="ok", description="x" * 2001)
        assert "status must be one of" in await call_error(client, "list_tasks", status="overdue")
        for tool in ("complete_task", "delete_task"):
            assert await call_error(client, tool, task_id=4242) == "task 4242 not found"
        assert await call_error(client, "update_task", task_id=4242, title="x") == "task 4242 not found"
        # What no column holds is refused by name, never a crash of the tool.
        assert await call_error(client, "add_task", title="a\x00b") == "the title must not contain NUL characters"
        assert "NUL" in await call_error(client, "add_task", title="ok", description="a\x00b")
        assert "NUL" in await call_error(client, "update_task", task_id=1, title="a\x00b")
        for number in (2**31, -(2**63), 10**25):
            for tool in ("complete_task", "delete_task"):
                assert await call_error(client, tool, task_id=number) == f"task {number} not found"
            assert await call_error(client, "update_task", task_id=number, title="x") == f"task {number} not found"
        # The session survives its errors.
        assert (await call(client, "add_task", title="Still here"))["status"] == "created"


async def test_users_only_ever_see_their_own_tasks(mcp_deployment: Deployment) -> None:
    secret = f"alice's secret {uuid.uuid4().hex[:8]}"
    async with mcp_client(mcp_deployment, "alice") as alice:
        number = (await call(alice, "add_task", title=secret))["task_id"]
    async with mcp_client(mcp_deployment, "bob") as bob:
        assert secret not in json.dumps(await call(bob, "list_tasks"))
        # An argument naming a user is ignored: the session's credentials decide.
        assert secret not in json.dumps(await call(bob, "list_tasks", user_id="alice"))
        assert await call_error(bob, "complete_task", task_id=number, user_id="alice") == f"task {number} not found"
        assert await call_error(bob, "update_task", task_id=number, title="mine now") == f"task {number} not found"
        assert await call_error(bob, "delete_task", task_id=number) == f"task {number} not found"
        # Bob's own numbering starts at 1, whatever alice has.
        assert (await call(bob, "add_task", title="bob's first", user_id="alice"))["task_id"] == 1
    [row] = await mcp_deployment.query(
        "SELECT user_id, title, completed FROM tasks WHERE number = :number AND user_id = 'alice'", number=number
    )
    assert row == {"user_id": "alice", "title": secret, "completed": False}
    assert await mcp_deployment.query("SELECT user_id FROM tasks WHERE title = 'bob''s first'") == [{"user_id": "bob"}]


# ------------------------------------------------------------------ authentication and hosts


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", "Basic abc"])
async def test_without_valid_credentials_it_is_401(mcp_deployment: Deployment, authorization: str | None) -> None:
    headers = {**MCP_HEADERS, **({"Authorization": authorization} if authorization else {})}
    async with httpx2.AsyncClient(base_url=mcp_deployment.base_url, timeout=30) as http:
        response = await http.post("/mcp", json=INITIALIZE, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")


async def test_the_sdk_client_without_credentials_gets_nowhere(mcp_deployment: Deployment) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        with pytest.raises(Exception):  # noqa: B017 - the SDK wraps the 401 in its own ways
            async with Client(streamable_http_client(f"{mcp_deployment.base_url}/mcp", http_client=http)) as client:
                await client.list_tools()
    assert await mcp_deployment.query("SELECT id FROM tasks WHERE user_id = 'local'") == []


async def raw_initialize(running: Deployment, *, host: str | None = None, origin: str | None = None) -> httpx2.Response:
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {USERS['alice']}"}
    if host is not None:
        headers["Host"] = host
    if origin is not None:
        headers["Origin"] = origin
    async with httpx2.AsyncClient(base_url=running.base_url, timeout=30) as http:
        return await http.post("/mcp", json=INITIALIZE, headers=headers)


async def test_it_is_served_at_exactly_slash_mcp(mcp_deployment: Deployment) -> None:
    response = await raw_initialize(mcp_deployment)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["serverInfo"]["name"] == "switchboard-todo"
    async with httpx2.AsyncClient(base_url=mcp_deployment.base_url, timeout=30) as http:
        headers = {**MCP_HEADERS, "Authorization": f"Bearer {USERS['alice']}"}
        assert (await http.post("/mcp/mcp", json=INITIALIZE, headers=headers)).status_code == 404


async def test_a_configured_host_name_is_served(mcp_deployment: Deployment) -> None:
    response = await raw_initialize(mcp_deployment, host=PROXY_HOST, origin=f"https://{PROXY_HOST}")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("host", "origin", "status"),
    [
        ("evil.example", None, 421),  # DNS rebinding: a name that resolves here but is not ours
        (f"{PROXY_HOST}:8443", None, 421),  # allowed without a port, so not on any port
        (None, "http://evil.example", 403),  # a page elsewhere calling in through the browser
    ],
)
async def test_other_hosts_and_origins_are_refused(
    mcp_deployment: Deployment, host: str | None, origin: str | None, status: int
) -> None:
    response = await raw_initialize(mcp_deployment, host=host, origin=origin)
    assert response.status_code == status, response.text


async def test_by_default_only_local_names_are_served(deployment: Deployment) -> None:
    assert (await raw_initialize(deployment)).status_code == 200
    assert (await raw_initialize(deployment, host=f"localhost:{deployment.port}")).status_code == 200
    assert (await raw_initialize(deployment, host="todo.example.com")).status_code == 421
