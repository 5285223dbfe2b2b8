"""`POST /v1/chat/completions`: OpenAI's Chat Completions, served through the queue."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator

import anyio
import structlog
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.body import read_json, validate
from api.errors import RUN_FAILURE_ERRORS, error_body, error_response
from api.openai_chunks import ChunkWriter, usage_body
from api.runs import RunRequest, StartedRun, start_run
from api.state import AppState
from domain import conversations
from domain.assistants import ASSISTANTS
from domain.chat import ChatCompletionRequest, ChatMessage, FunctionCall, ModelParams, ToolCallSpec
from domain.errors import InvalidRequest, NotFound, RunTimeout, SwitchboardError
from domain.events import (
    ClientToolCallDelta,
    FinishReason,
    RunCompleted,
    RunFailed,
    RunStarted,
    TextDelta,
    ToolCalled,
    ToolReturned,
    Usage,
)

log = structlog.get_logger("switchboard.api.chat")

CONVERSATION_HEADERS = ("x-conversation-id", "x-openwebui-chat-id")
# Open WebUI asks for titles, tags and follow-ups with a single user message that starts like this.
BACKGROUND_TASK_PREFIX = "### Task:"
SHUTDOWN_GRACE_S = 2.0


async def chat_completions(request: Request) -> Response:
    state: AppState = request.state.app
    user_id = await state.authenticator.authenticate(request.headers.get("authorization"))
    body = validate(ChatCompletionRequest, await read_json(request, max_bytes=state.settings.max_body_bytes))
    if body.model not in ASSISTANTS:
        raise NotFound(f"The model '{body.model}' does not exist", param="model", code="model_not_found")

    conversation_key = _conversation_key(request)
    background = _is_background_task(body.messages)
    history, new_messages, system_messages = _split_turn(body.messages)
    run_request = RunRequest(
        user_id=user_id,
        request_id=request.state.request_id,
        assistant=body.model,
        conversation_key=None if background else (conversation_key or conversations.new_conversation_key()),
        new_conversation=conversation_key is None,
        new_messages=new_messages,
        # An unstored turn has no window to draw on: what the client sent is all the model gets.
        history=list(body.messages) if background else history,
        system_messages=system_messages,
        tools=body.tools,
        tool_choice=body.tool_choice,
        params=ModelParams(
            temperature=body.temperature,
            top_p=body.top_p,
            max_tokens=body.max_completion_tokens or body.max_tokens,
            stop=[body.stop] if isinstance(body.stop, str) else body.stop,
            parallel_tool_calls=body.parallel_tool_calls,
        ),
    )
    headers = {"X-Conversation-ID": run_request.conversation_key or conversation_key or ""}
    if not headers["X-Conversation-ID"]:
        del headers["X-Conversation-ID"]

    if not body.stream:
        try:
            async with start_run(state, run_request) as run:
                return await _collect(run, body.model, headers)
        except SwitchboardError as exc:
            # The turn may be stored even though the run failed: the client still learns its conversation.
            return error_response(exc, headers=headers)

    shutdown = anyio.Event()
    stack = contextlib.AsyncExitStack()
    async with stack:
        run = await stack.enter_async_context(start_run(state, run_request, stop=shutdown))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = _stream(run, body.model, include_usage, stack.pop_all(), shutdown)
    return EventSourceResponse(
        stream,
        headers=headers,
        ping=state.settings.keepalive_s,
        sep="\n",
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_S,
    )


def _conversation_key(request: Request) -> str | None:
    for name in CONVERSATION_HEADERS:
        value = request.headers.get(name, "").strip()
        if value:
            if len(value) > conversations.MAX_KEY_LENGTH:
                raise InvalidRequest(f"{name} is longer than {conversations.MAX_KEY_LENGTH} characters", param=name)
            return value
    return None


def _is_background_task(messages: list[ChatMessage]) -> bool:
    users = [message for message in messages if message.role == "user"]
    others = [message for message in messages if message.role not in ("user", "system", "developer")]
    return len(users) == 1 and not others and users[0].text.lstrip().startswith(BACKGROUND_TASK_PREFIX)


def _split_turn(
    messages: list[ChatMessage],
) -> tuple[list[ChatMessage] | None, list[ChatMessage], list[ChatMessage]]:
    """(client history or None, the new turn to store, the client's system messages).

    A client that sends more than one turn sends the whole conversation, as Open WebUI does; that
    history is the truth, and only what follows the last assistant message is new. A client that sends
    one user message relies on the stored window.
    """
    system = [message for message in messages if message.role in ("system", "developer")]
    conversational = [message for message in messages if message.role not in ("system", "developer")]
    if not conversational:
        raise InvalidRequest("messages must include at least one user or tool message", param="messages")
    if conversational[-1].role == "assistant":
        raise InvalidRequest("the last message must not be an assistant message", param="messages")
    if len(conversational) == 1:
        if conversational[0].role != "user":
            raise InvalidRequest("a single message must come from the user", param="messages")
        return None, conversational, system
    last_assistant = (
        max(i for i, message in enumerate(conversational) if message.role == "assistant")
        if any(message.role == "assistant" for message in conversational)
        else -1
    )
    return messages, conversational[last_assistant + 1 :], system


async def _collect(run: StartedRun, model: str, headers: dict[str, str]) -> Response:
    text: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    async for event in run.events:
        if isinstance(event, RunStarted):
            # A retried run starts over; what an interrupted attempt said is not the answer.
            text.clear()
            calls.clear()
        elif isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, ClientToolCallDelta):
            call = calls.setdefault(event.index, {"id": "", "name": "", "arguments": ""})
            if event.call_id is not None:
                call["id"], call["name"] = event.call_id, event.name or ""
            call["arguments"] += event.arguments
        elif isinstance(event, RunFailed):
            error_cls = RUN_FAILURE_ERRORS.get(event.code, SwitchboardError)
            raise error_cls(event.message, code=event.code)
        elif isinstance(event, RunCompleted):
            return JSONResponse(_completion(run, model, "".join(text), calls, event), headers=headers)
        else:
            assert isinstance(event, ToolCalled | ToolReturned)
    raise RunTimeout("the run ended without a result")


def _completion(
    run: StartedRun, model: str, text: str, calls: dict[int, dict[str, str]], done: RunCompleted
) -> dict[str, object]:
    message: dict[str, object] = {"role": "assistant", "content": text or None, "refusal": None}
    if calls:
        message["tool_calls"] = [
            ToolCallSpec(
                id=call["id"], function=FunctionCall(name=call["name"], arguments=call["arguments"])
            ).model_dump()
            for _, call in sorted(calls.items())
        ]
    elif not text:
        message["content"] = ""
    return {
        "id": _completion_id(run),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": done.finish_reason}],
        "usage": usage_body(done.usage),
    }


def _completion_id(run: StartedRun) -> str:
    return "chatcmpl-" + run.run_id.removeprefix("run_")


async def _stream(
    run: StartedRun,
    model: str,
    include_usage: bool,
    cleanup: contextlib.AsyncExitStack,
    shutdown: anyio.Event,
) -> AsyncIterator[dict[str, str]]:
    writer = ChunkWriter(completion_id=_completion_id(run), created=int(time.time()), model=model)
    finish: FinishReason | None = None
    usage = Usage()
    output_attempt = 0  # the attempt whose output the client has (part of); 0 while it has none
    async with cleanup:
        try:
            async for event in run.events:
                if isinstance(event, TextDelta):
                    output_attempt = event.attempt
                    yield {"data": writer.text(event.text)}
                elif isinstance(event, ClientToolCallDelta):
                    output_attempt = event.attempt
                    yield {"data": writer.tool_call(event)}
                elif isinstance(event, RunStarted) and 0 < output_attempt < event.attempt:
                    # The run was interrupted after part of an answer went out, and starts over. Its
                    # new answer cannot be spliced onto the old; it is stored in the conversation.
                    message = "the run was interrupted and restarted; its answer will be stored in the conversation"
                    yield {"data": _error_data(message, "run_restarted")}
                    yield {"data": "[DONE]"}
                    return
                elif isinstance(event, RunCompleted):
                    finish, usage = event.finish_reason, event.usage
                elif isinstance(event, RunFailed):
                    yield {"data": _error_data(event.message, event.code)}
                    yield {"data": "[DONE]"}
                    return
                else:
                    assert isinstance(event, RunStarted | ToolCalled | ToolReturned)
        except RunTimeout as exc:
            yield {"data": _error_data(exc.message, exc.code)}
            yield {"data": "[DONE]"}
            return
        if finish is None:
            # The server is shutting down; the run goes on in its worker and its answer is stored.
            log.info("stream.ended_by_shutdown", run_id=run.run_id)
            message = "the server is shutting down; the answer will be stored in the conversation"
            yield {"data": _error_data(message, "server_shutdown")}
            yield {"data": "[DONE]"}
            return
        yield {"data": writer.finish(finish)}
        if include_usage:
            yield {"data": writer.usage(usage)}
        yield {"data": "[DONE]"}


def _error_data(message: str, code: str) -> str:
    return json.dumps(error_body(message, type_="server_error", code=code))
