"""`POST /api/{user_id}/chat`: one turn with the todo assistant, answered as JSON or as Server-Sent Events.

The user comes from the credentials; `{user_id}` in the path must name the caller (403 otherwise),
and another user's conversation is exactly as missing as one that never existed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, assert_never

import anyio
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.body import read_json, validate
from api.headers import header_text
from api.relay.admission import idempotency_key
from api.relay.policy import conversation_policy
from api.relay.progress import (
    RESTARTED_MESSAGE,
    AwaitingApproval,
    Cancelled,
    ClientToolCall,
    Completed,
    Detached,
    Failed,
    Restarted,
    Text,
    ToolCall,
    ToolResult,
    ToolsOffered,
)
from api.relay.sse import event_stream
from api.relay.start import StartedRun, start_run
from api.todo.caller import caller
from domain import conversations
from domain.assistants import TODO_ASSISTANT, TODO_MAX_MESSAGE_CHARS
from domain.chat import ChatMessage
from domain.database import unavailable_on_connection_errors
from domain.errors import InvalidRequest, NotFound, RunFailure, ServiceUnavailable, SwitchboardError, Unprocessable
from domain.run_request import RunRequest
from domain.text import StorableText


class TodoChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    conversation_id: Annotated[str, Field(min_length=1, max_length=255)] | StrictInt | None = None
    message: Annotated[StorableText, Field(min_length=1, max_length=TODO_MAX_MESSAGE_CHARS)]

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message must not be blank")
        return value


async def chat(request: Request) -> Response:
    state, user_id = await caller(request)
    # This API answers any body it cannot use with 422, as its clients expect.
    data = await read_json(request, max_bytes=state.settings.max_body_bytes, error=Unprocessable)
    body = validate(TodoChatRequest, data, error=Unprocessable)
    key = None if body.conversation_id is None else _conversation_key(str(body.conversation_id))
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
        conversation_policy=conversation_policy(request, state.settings),
    )
    idempotency = idempotency_key(request, data)
    if "text/event-stream" not in request.headers.get("accept", ""):
        run_id: str | None = None
        try:
            async with start_run(state, run_request, idempotency=idempotency) as run:
                run_id = run.run_id
                return JSONResponse(await _collect(run), headers={"X-Run-ID": run.run_id})
        except SwitchboardError as exc:
            if run_id is not None:
                exc.headers["X-Run-ID"] = run_id
            raise

    shutdown = anyio.Event()
    stack = contextlib.AsyncExitStack()
    async with stack:
        run = await stack.enter_async_context(start_run(state, run_request, stop=shutdown, idempotency=idempotency))
        stream = _stream(run, stack.pop_all())
    return event_stream(
        stream,
        settings=state.settings,
        shutdown=shutdown,
        open_streams=state.metrics.open_streams,
        headers={"X-Conversation-ID": header_text(run.conversation_key or ""), "X-Run-ID": run.run_id},
    )


def _conversation_key(given: str) -> str:
    try:
        return conversations.parse_key(given, param="conversation_id")
    except InvalidRequest as exc:
        raise Unprocessable(exc.message, param=exc.param) from exc


class _Reply:
    """The JSON answer, built up from what the run shows."""

    def __init__(self, run: StartedRun) -> None:
        self.conversation_id = run.conversation_key
        self.run_id = run.run_id
        self.text: list[str] = []
        self.calls: dict[str, dict[str, Any]] = {}

    def add(self, progress: Text | ToolCall | ToolResult) -> None:
        match progress:
            case Text():
                self.text.append(progress.text)
            case ToolCall():
                self.calls[progress.call_id] = {"tool": progress.tool, "args": progress.args, "result": None}
            case ToolResult():
                call = self.calls.setdefault(progress.call_id, {"tool": progress.tool, "args": {}})
                call["result"] = progress.result
            case _:
                assert_never(progress)

    def restart(self) -> None:
        self.text.clear()
        self.calls.clear()

    def body(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "run_id": self.run_id,
            "response": "".join(self.text),
            "tool_calls": list(self.calls.values()),
        }


async def _collect(run: StartedRun) -> dict[str, Any]:
    reply = _Reply(run)
    async for progress in run.progress:
        match progress:
            case Text() | ToolCall() | ToolResult():
                reply.add(progress)
            case ClientToolCall() | ToolsOffered():
                pass  # no client tools; the tool list is the Responses API's
            case Restarted():
                reply.restart()
            case Completed():
                return reply.body()
            case Cancelled():
                return {**reply.body(), "cancelled": True}
            case AwaitingApproval():
                return {**reply.body(), "pending_approvals": _approvals(progress)}
            case Failed():
                raise RunFailure(progress.message, code=progress.code)
            case Detached():
                raise ServiceUnavailable(progress.message, code=progress.code)
            case _:
                assert_never(progress)
    raise AssertionError("follow() always ends with Completed, Failed or Detached")


def _approvals(progress: AwaitingApproval) -> list[dict[str, Any]]:
    return [approval.model_dump() for approval in progress.approvals]


def _sse(event: str, data: Any) -> dict[str, str]:
    return {"event": event, "data": json.dumps(data)}


async def _stream(run: StartedRun, cleanup: contextlib.AsyncExitStack) -> AsyncIterator[dict[str, str]]:
    """Events `delta`, `tool_call`, `tool_result`, then `done` with the whole reply, or `error`."""
    reply = _Reply(run)
    async with cleanup:
        async for progress in run.progress:
            match progress:
                case Text():
                    reply.add(progress)
                    yield _sse("delta", {"text": progress.text})
                case ToolCall():
                    reply.add(progress)
                    yield _sse("tool_call", {"tool": progress.tool, "args": progress.args})
                case ToolResult():
                    reply.add(progress)
                    yield _sse("tool_result", {"tool": progress.tool, "result": progress.result})
                case ClientToolCall() | ToolsOffered():
                    pass  # no client tools; the tool list is the Responses API's
                case Restarted():
                    yield _sse("error", {"message": RESTARTED_MESSAGE, "code": "run_restarted"})
                    return
                case Completed():
                    yield _sse("done", reply.body())
                case Cancelled():
                    yield _sse("cancelled", {**reply.body(), "cancelled": True})
                case AwaitingApproval():
                    yield _sse("awaiting_approval", {**reply.body(), "pending_approvals": _approvals(progress)})
                case Failed() | Detached():
                    yield _sse("error", {"message": progress.message, "code": progress.code})
                case _:
                    assert_never(progress)
