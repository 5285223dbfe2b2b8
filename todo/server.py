"""The todo MCP server: five tools over `domain/tasks.py`, acting for whoever the connection belongs to.

The user is never a tool argument. It comes from the connection's own state, which callers cannot
touch through the protocol:

- An external client over `/mcp` is authenticated by the API before the SDK sees the request, which
  puts the user id in the request's ASGI state (`HTTP_USER_STATE_KEY`); tools read it from there.
- A worker run opens its own in-process MCP session whose serving loop is given a `TodoScope` with a
  `RunBinding` (user, run, conversation) as the state every handler of that session sees. Nothing on
  the wire can name another run or user; the binding is fixed when the session opens.

Tool failures the model can act on (bad input, no such task) come back as `isError` results with a
message, not as exceptions. Inside a worker run each call is recorded in `tool_calls`, in the same
transaction as its effect, keyed by its position in the run (see `domain/tool_calls.py`); calls from
external clients have no run and are not recorded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import structlog
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain import runs, tasks, tool_calls
from domain.errors import InvalidRequest, NotFound

log = structlog.get_logger("switchboard.todo")

SERVER_NAME = "switchboard-todo"
SUPERSEDED = "this attempt of the run was superseded by another; nothing was done"
HTTP_USER_STATE_KEY = "switchboard_mcp_user_id"
# `_meta` key by which a worker run's MCP client names the model's call id, so the record and the
# run's events agree on it.
CALL_ID_META_KEY = "switchboard/call_id"

INSTRUCTIONS = (
    "Manages the caller's own todo list. Tasks are identified by their number (task_id), which is the "
    "caller's own 1, 2, 3…; numbers are never reused after a delete."
)


class CallOrdinals:
    """The positions of a run's tool calls: 1, 2, 3… in the order the model asked for them.

    The model's response names its calls in order before any of them runs; `plan` takes them in that
    order, so parallel calls get stable positions whatever order they arrive in. A call that was not
    planned gets the next free position when it arrives.
    """

    def __init__(self, *, first: int = 1) -> None:
        self._next = first
        self._by_call_id: dict[str, int] = {}

    def plan(self, call_ids: Sequence[str]) -> None:
        for call_id in call_ids:
            if call_id not in self._by_call_id:
                self._by_call_id[call_id] = self._take()

    def assign(self, call_id: str | None) -> int:
        if call_id is None:
            return self._take()
        if call_id not in self._by_call_id:
            self._by_call_id[call_id] = self._take()
        return self._by_call_id[call_id]

    def _take(self) -> int:
        ordinal = self._next
        self._next += 1
        return ordinal


@dataclass(frozen=True, kw_only=True)
class RunBinding:
    """Who a worker run's MCP session acts for. Made by the worker from the claimed run, never from input."""

    user_id: str
    run_id: str
    conversation_id: int | None
    # The attempt this session belongs to, and its lease: every call is fenced by the attempt.
    attempt: int
    lease_s: float
    ordinals: CallOrdinals = field(default_factory=CallOrdinals)


@dataclass(frozen=True, kw_only=True)
class TodoScope:
    """The state every handler of one MCP connection sees: the database, and the run if it is a worker's."""

    db_engine: AsyncEngine
    run: RunBinding | None = None


# ------------------------------------------------------------------ results


def _text(payload: Any) -> str:
    return json.dumps(payload, ensure_ascii=False)


def ok_result(payload: Any) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=_text(payload))])


def error_result(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def recorded_result(call: tool_calls.RecordedCall) -> CallToolResult:
    """The result a recorded call gave, exactly as the model saw it then."""
    if call.is_error:
        return error_result(str((call.result or {}).get("error", "the tool failed")))
    return ok_result(call.result)


def result_text(call: tool_calls.RecordedCall) -> str:
    content = recorded_result(call).content[0]
    assert isinstance(content, TextContent)
    return content.text


# ------------------------------------------------------------------ who is calling


def _scope_of(ctx: Context[Any, Any]) -> TodoScope:
    scope = ctx.request_context.lifespan_context
    if not isinstance(scope, TodoScope):
        raise ToolError("the todo server is not configured")
    return scope


def _http_user(ctx: Context[Any, Any]) -> str | None:
    request = ctx.request_context.request
    scope = getattr(request, "scope", None)
    if not isinstance(scope, dict):
        return None
    user = (scope.get("state") or {}).get(HTTP_USER_STATE_KEY)
    return user if isinstance(user, str) and user else None


def _call_id(ctx: Context[Any, Any]) -> str | None:
    meta = ctx.request_context.meta or {}
    call_id = meta.get(CALL_ID_META_KEY)
    return call_id if isinstance(call_id, str) and call_id else None


Effect = Callable[[AsyncConnection, str], Awaitable[Any]]


async def _invoke(ctx: Context[Any, Any], tool_name: str, arguments: dict[str, Any], effect: Effect) -> CallToolResult:
    scope = _scope_of(ctx)
    if scope.run is not None:
        # Recorded as the tool understood them, without the options left out.
        given = {name: value for name, value in arguments.items() if value is not None}
        return await _invoke_in_run(ctx, scope.db_engine, scope.run, tool_name, given, effect)
    user_id = _http_user(ctx)
    if user_id is None:
        raise ToolError("not authenticated")
    async with scope.db_engine.begin() as connection:
        try:
            return ok_result(await effect(connection, user_id))
        except (InvalidRequest, NotFound) as exc:
            return error_result(exc.message)


async def _invoke_in_run(
    ctx: Context[Any, Any],
    db_engine: AsyncEngine,
    run: RunBinding,
    tool_name: str,
    arguments: dict[str, Any],
    effect: Effect,
) -> CallToolResult:
    call_id = _call_id(ctx)
    ordinal = run.ordinals.assign(call_id)
    async with db_engine.begin() as connection:
        # First, and in the call's own transaction: an attempt that was superseded (its worker was
        # thought dead) does nothing, and on PostgreSQL no new attempt can start until this commits.
        if not await runs.hold(connection, run_id=run.run_id, attempt=run.attempt, lease_s=run.lease_s):
            log.warning("tool.superseded", run_id=run.run_id, attempt=run.attempt, tool=tool_name)
            return error_result(SUPERSEDED)
        record_id = await tool_calls.claim(
            connection,
            user_id=run.user_id,
            conversation_id=run.conversation_id,
            run_id=run.run_id,
            ordinal=ordinal,
            call_id=call_id,
            tool_name=tool_name,
            arguments=arguments,
        )
        if record_id is None:
            earlier = await tool_calls.recorded(connection, run_id=run.run_id, ordinal=ordinal)
            log.info("tool.replayed", run_id=run.run_id, ordinal=ordinal, tool=tool_name, recorded=earlier.tool_name)
            return recorded_result(earlier)
        try:
            payload = await effect(connection, run.user_id)
        except (InvalidRequest, NotFound) as exc:
            await tool_calls.settle(connection, record_id=record_id, result={"error": exc.message}, is_error=True)
            return error_result(exc.message)
        await tool_calls.settle(connection, record_id=record_id, result=payload, is_error=False)
    return ok_result(payload)


# ------------------------------------------------------------------ tools


def _change(view: tasks.TaskView, status: str) -> dict[str, Any]:
    return {"task_id": view.number, "status": status, "title": view.title}


TaskId = Annotated[int, Field(description="The task's number, as list_tasks shows it (the user's own 1, 2, 3…).")]
Title = Annotated[str, Field(description='What to do, short (at most 200 characters), e.g. "Buy groceries".')]
NewTitle = Annotated[str | None, Field(description="The new title, if it changes.")]
Description = Annotated[str | None, Field(description="Optional details (at most 2000 characters).")]
Status = Annotated[
    str,
    Field(
        description='"all" (default), "pending" (not done yet) or "completed".',
        json_schema_extra={"enum": list(tasks.TASK_STATUSES)},
    ),
]


async def add_task(title: Title, ctx: Context[Any, Any], description: Description = None) -> CallToolResult:
    """Add a task to the user's todo list: for anything they want to add, create or remember to do."""

    async def effect(connection: AsyncConnection, user_id: str) -> Any:
        view = await tasks.add_task(connection, user_id=user_id, title=title, description=description)
        return _change(view, "created")

    return await _invoke(ctx, "add_task", {"title": title, "description": description}, effect)


async def list_tasks(ctx: Context[Any, Any], status: Status = "all") -> CallToolResult:
    """List the user's tasks by number: each with its id, title, description and whether it is completed."""

    async def effect(connection: AsyncConnection, user_id: str) -> Any:
        views = await tasks.list_tasks(connection, user_id=user_id, status=tasks.parse_status(status))
        return [view.as_tool_item() for view in views]

    return await _invoke(ctx, "list_tasks", {"status": status}, effect)


async def complete_task(task_id: TaskId, ctx: Context[Any, Any]) -> CallToolResult:
    """Mark one of the user's tasks as done."""

    async def effect(connection: AsyncConnection, user_id: str) -> Any:
        return _change(await tasks.complete_task(connection, user_id=user_id, number=task_id), "completed")

    return await _invoke(ctx, "complete_task", {"task_id": task_id}, effect)


async def delete_task(task_id: TaskId, ctx: Context[Any, Any]) -> CallToolResult:
    """Delete one of the user's tasks for good."""

    async def effect(connection: AsyncConnection, user_id: str) -> Any:
        return _change(await tasks.delete_task(connection, user_id=user_id, number=task_id), "deleted")

    return await _invoke(ctx, "delete_task", {"task_id": task_id}, effect)


async def update_task(
    task_id: TaskId, ctx: Context[Any, Any], title: NewTitle = None, description: Description = None
) -> CallToolResult:
    """Change the title and/or description of one of the user's tasks."""

    async def effect(connection: AsyncConnection, user_id: str) -> Any:
        view = await tasks.update_task(
            connection, user_id=user_id, number=task_id, title=title, description=description
        )
        return _change(view, "updated")

    return await _invoke(ctx, "update_task", {"task_id": task_id, "title": title, "description": description}, effect)


def create_todo_server(*, db_engine: AsyncEngine) -> MCPServer[TodoScope]:
    """The server. Its lifespan state serves external clients; a worker run's session brings its own."""

    @asynccontextmanager
    async def lifespan(_server: MCPServer[TodoScope]) -> AsyncIterator[TodoScope]:
        yield TodoScope(db_engine=db_engine)

    server: MCPServer[TodoScope] = MCPServer(SERVER_NAME, instructions=INSTRUCTIONS, lifespan=lifespan)
    reads = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True)
    changes = ToolAnnotations(read_only_hint=False, destructive_hint=False)
    server.add_tool(add_task, annotations=changes, structured_output=False)
    server.add_tool(list_tasks, annotations=reads, structured_output=False)
    server.add_tool(complete_task, annotations=ToolAnnotations(idempotent_hint=True), structured_output=False)
    server.add_tool(delete_task, annotations=ToolAnnotations(destructive_hint=True), structured_output=False)
    server.add_tool(update_task, annotations=changes, structured_output=False)
    return server
