"""The todo assistant's own API: `POST /api/{user_id}/chat` and the read endpoints a UI needs.

Every endpoint takes the user from the credentials; `{user_id}` in the path must name the caller
(403 otherwise), and another user's conversation is exactly as missing as one that never existed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.body import read_json, validate
from api.errors import RUN_FAILURE_ERRORS
from api.runs import RunRequest, StartedRun, start_run
from api.state import AppState
from domain import conversations, tasks
from domain.chat import ChatMessage
from domain.database import unavailable_on_connection_errors
from domain.errors import InvalidRequest, NotFound, PermissionDenied, RunTimeout, SwitchboardError, Unprocessable
from domain.events import (
    ClientToolCallDelta,
    RunCompleted,
    RunFailed,
    RunStarted,
    TextDelta,
    ToolCalled,
    ToolReturned,
)
from domain.pagination import decode_cursor, encode_cursor, parse_limit

TODO_ASSISTANT = "todo"
SHUTDOWN_GRACE_S = 2.0
MAX_MESSAGE_CHARS = 4000


class TodoChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    conversation_id: Annotated[str, Field(min_length=1, max_length=255)] | StrictInt | None = None
    message: Annotated[str, Field(min_length=1, max_length=MAX_MESSAGE_CHARS)]

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message must not be blank")
        return value


async def _caller(request: Request) -> tuple[AppState, str]:
    """Authenticate, then check the path names the caller: 401 before 403."""
    state: AppState = request.state.app
    user_id = await state.authenticator.authenticate(request.headers.get("authorization"))
    path_user = request.path_params.get("user_id")
    if path_user is not None and path_user != user_id:
        raise PermissionDenied("you can only act as yourself: the path's user id is not yours")
    return state, user_id


async def me(request: Request) -> Response:
    _, user_id = await _caller(request)
    return JSONResponse({"user_id": user_id})


async def chat(request: Request) -> Response:
    state, user_id = await _caller(request)
    try:
        body = validate(TodoChatRequest, await read_json(request, max_bytes=state.settings.max_body_bytes))
    except InvalidRequest as exc:
        raise Unprocessable(exc.message, param=exc.param) from None
    key = None if body.conversation_id is None else str(body.conversation_id)
    if key is not None:
        async with unavailable_on_connection_errors(), state.db_engine.connect() as connection:
            if await conversations.get(connection, user_id=user_id, key=key) is None:
                raise NotFound(f"conversation '{key}' not found", param="conversation_id")
    run_request = RunRequest(
        user_id=user_id,
        request_id=request.state.request_id,
        assistant=TODO_ASSISTANT,
        conversation_key=key or conversations.new_conversation_key(),
        new_conversation=key is None,
        new_messages=[ChatMessage(role="user", content=body.message)],
    )
    if "text/event-stream" not in request.headers.get("accept", ""):
        async with start_run(state, run_request) as run:
            return JSONResponse(await _collect(run))

    shutdown = anyio.Event()
    stack = contextlib.AsyncExitStack()
    async with stack:
        run = await stack.enter_async_context(start_run(state, run_request, stop=shutdown))
        stream = _stream(run, stack.pop_all())
    return EventSourceResponse(
        stream,
        ping=state.settings.keepalive_s,
        sep="\n",
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_S,
        headers={"X-Conversation-ID": run.conversation_key or ""},
    )


class _Reply:
    """The JSON answer, built up from a run's events."""

    def __init__(self, run: StartedRun) -> None:
        self.conversation_id = run.conversation_key
        self.text: list[str] = []
        self.calls: dict[str, dict[str, Any]] = {}

    def restart(self) -> None:
        self.text.clear()
        self.calls.clear()

    def body(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "response": "".join(self.text),
            "tool_calls": list(self.calls.values()),
        }


async def _collect(run: StartedRun) -> dict[str, Any]:
    reply = _Reply(run)
    async for event in run.events:
        if isinstance(event, RunStarted):
            reply.restart()
        elif isinstance(event, TextDelta):
            reply.text.append(event.text)
        elif isinstance(event, ToolCalled):
            reply.calls[event.call_id] = {"tool": event.tool, "args": event.args, "result": None}
        elif isinstance(event, ToolReturned):
            reply.calls.setdefault(event.call_id, {"tool": event.tool, "args": {}})["result"] = event.result
        elif isinstance(event, RunFailed):
            raise RUN_FAILURE_ERRORS.get(event.code, SwitchboardError)(event.message, code=event.code)
        elif isinstance(event, RunCompleted):
            return reply.body()
        else:
            assert isinstance(event, ClientToolCallDelta)
    raise RunTimeout("the run ended without a result")


def _sse(event: str, data: Any) -> dict[str, str]:
    return {"event": event, "data": json.dumps(data)}


async def _stream(run: StartedRun, cleanup: contextlib.AsyncExitStack) -> AsyncIterator[dict[str, str]]:
    reply = _Reply(run)
    async with cleanup:
        try:
            async for event in run.events:
                if isinstance(event, RunStarted):
                    if event.attempt > 1 and (reply.text or reply.calls):
                        yield _sse(
                            "error", {"message": "the run was interrupted and restarted; its answer will be stored"}
                        )
                        return
                elif isinstance(event, TextDelta):
                    reply.text.append(event.text)
                    yield _sse("delta", {"text": event.text})
                elif isinstance(event, ToolCalled):
                    reply.calls[event.call_id] = {"tool": event.tool, "args": event.args, "result": None}
                    yield _sse("tool_call", {"tool": event.tool, "args": event.args})
                elif isinstance(event, ToolReturned):
                    reply.calls.setdefault(event.call_id, {"tool": event.tool, "args": {}})["result"] = event.result
                    yield _sse("tool_result", {"tool": event.tool, "result": event.result})
                elif isinstance(event, RunFailed):
                    yield _sse("error", {"message": event.message, "code": event.code})
                    return
                elif isinstance(event, RunCompleted):
                    yield _sse("done", reply.body())
                    return
                else:
                    assert isinstance(event, ClientToolCallDelta)
        except RunTimeout as exc:
            yield _sse("error", {"message": exc.message, "code": exc.code})
            return
        yield _sse(
            "error", {"message": "the server is shutting down; the answer will be stored", "code": "server_shutdown"}
        )


TaskStatus = Literal["all", "pending", "completed"]


TASK_STATUSES: dict[str, TaskStatus] = {"all": "all", "pending": "pending", "completed": "completed"}


def _task_status(raw: str) -> TaskStatus:
    if raw in TASK_STATUSES:
        return TASK_STATUSES[raw]
    raise InvalidRequest("status must be one of all, pending, completed", param="status")


async def list_tasks(request: Request) -> Response:
    state, user_id = await _caller(request)
    status = _task_status(request.query_params.get("status", "all"))
    limit = parse_limit(request.query_params.get("limit"))
    cursor = request.query_params.get("cursor")
    after = int(decode_cursor(cursor, arity=1)[0]) if cursor else None
    async with unavailable_on_connection_errors(), state.db_engine.connect() as connection:
        found = await tasks.list_tasks(
            connection,
            user_id=user_id,
            status=status,
            after_number=after,
            limit=limit + 1,
        )
    page = found[:limit]
    return JSONResponse(
        {
            "data": [task.as_dict() for task in page],
            "next_cursor": encode_cursor(page[-1].id) if len(found) > limit else None,
        }
    )


async def list_conversations(request: Request) -> Response:
    state, user_id = await _caller(request)
    limit = parse_limit(request.query_params.get("limit"))
    cursor = request.query_params.get("cursor")
    before = None
    if cursor:
        updated_at, conversation_id = decode_cursor(cursor, arity=2)
        try:
            before = (datetime.fromisoformat(str(updated_at)), int(conversation_id))
        except (TypeError, ValueError):
            raise InvalidRequest("cursor is not one this server gave out", param="cursor") from None
    async with unavailable_on_connection_errors(), state.db_engine.connect() as connection:
        found = await conversations.list_recent(connection, user_id=user_id, limit=limit + 1, before=before)
    page = found[:limit]
    last = page[-1] if page else None
    return JSONResponse(
        {
            "data": [
                {
                    "id": item.key,
                    "title": item.title,
                    "created_at": item.created_at.isoformat(),
                    "updated_at": item.updated_at.isoformat(),
                }
                for item in page
            ],
            "next_cursor": encode_cursor(last.updated_at.isoformat(), last.id) if last and len(found) > limit else None,
        }
    )


async def list_messages(request: Request) -> Response:
    state, user_id = await _caller(request)
    key = request.path_params["conversation_id"]
    limit = parse_limit(request.query_params.get("limit"))
    cursor = request.query_params.get("cursor")
    after = int(decode_cursor(cursor, arity=1)[0]) if cursor else None
    async with unavailable_on_connection_errors(), state.db_engine.connect() as connection:
        conversation = await conversations.get(connection, user_id=user_id, key=key)
        if conversation is None:
            raise NotFound(f"conversation '{key}' not found")
        found = await conversations.list_messages(
            connection, user_id=user_id, conversation_id=conversation.id, limit=limit + 1, after_id=after
        )
    page = found[:limit]
    return JSONResponse(
        {
            "data": [
                {
                    "id": message.id,
                    "role": message.role,
                    "content": message.content,
                    "created_at": message.created_at.isoformat(),
                    "tool_calls": message.tool_calls,
                }
                for message in page
            ],
            "next_cursor": encode_cursor(page[-1].id) if len(found) > limit else None,
        }
    )


async def delete_conversation(request: Request) -> Response:
    state, user_id = await _caller(request)
    key = request.path_params["conversation_id"]
    async with unavailable_on_connection_errors(), state.db_engine.begin() as connection:
        if not await conversations.delete(connection, user_id=user_id, key=key):
            raise NotFound(f"conversation '{key}' not found")
    return Response(status_code=204)
