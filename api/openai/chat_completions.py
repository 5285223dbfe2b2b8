"""`POST /v1/chat/completions`: OpenAI's Chat Completions, served through the queue."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import assert_never

import anyio
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.body import read_json, validate
from api.errors import error_body
from api.headers import header_text, text_header
from api.openai.chunks import ChunkWriter, logprobs_body, usage_body
from api.openai.schemas import ChatCompletionRequest
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
    RunProgress,
    Text,
    ToolCall,
    ToolResult,
    ToolsOffered,
)
from api.relay.resume_run import decided_in_chat
from api.relay.sse import event_stream
from api.relay.start import StartedRun, start_run
from api.state import AppState
from domain import conversations
from domain.admission import IdempotencyKey
from domain.chat import ChatMessage, FunctionCall, ModelParams, ToolCallSpec
from domain.content import check_part_sizes
from domain.errors import InvalidRequest, NotFound, RunFailure, ServiceUnavailable, SwitchboardError
from domain.events import Usage
from domain.passthrough import check_passable
from domain.run_request import RunRequest
from domain.run_views import unix_seconds

log = structlog.get_logger("switchboard.api.chat")

CONVERSATION_HEADERS = ("x-conversation-id", "x-openwebui-chat-id")
# Open WebUI asks for titles, tags and follow-ups with a single user message that starts like this.
BACKGROUND_TASK_PREFIX = "### Task:"
# Open WebUI's chats that it keeps nowhere (temporary chats, chats kept in the browser) send an
# X-OpenWebUI-Chat-Id like these: answered, never stored, and one tab's chats never share a history.
UNSTORED_CHAT_PREFIXES = ("temporary:", "local:")


async def chat_completions(request: Request) -> Response:
    state: AppState = request.state.app
    user_id = await state.authenticator.authenticate(request.headers)
    # Images, audio and files arrive inline: a chat body may be larger than other bodies.
    data = await read_json(request, max_bytes=state.settings.max_chat_body_bytes)
    body = validate(ChatCompletionRequest, data)
    # An assistant the caller may not use is missing, as far as the caller can tell.
    assistant = state.assistants.find(body.model, user_id=user_id)
    if assistant is None:
        raise NotFound(f"The model '{body.model}' does not exist", param="model", code="model_not_found")
    check_part_sizes(body.messages, max_part_bytes=state.settings.max_part_bytes)
    run_request = _run_request(request, body, user_id=user_id)
    check_passable(
        provider=assistant.provider or state.settings.llm_provider,
        assistant=body.model,
        engine=assistant.engine,
        params=run_request.params,
        messages=body.messages,
    )
    # The conversation a header names is part of what is asked; one the API makes up is not.
    idempotency = idempotency_key(request, data, conversation=_conversation_key(request))
    started: StartedRun | None = None

    if not body.stream:
        try:
            async with _started(state, run_request, idempotency=idempotency) as started:
                return JSONResponse(await _collect(started, body.model), headers=_run_headers(started))
        except SwitchboardError as exc:
            # The turn may be stored even though the run failed: the client still learns its conversation,
            # and the run, once one was recorded.
            exc.headers.update(_run_headers(started) if started else _conversation_header(run_request))
            raise

    shutdown = anyio.Event()
    stack = contextlib.AsyncExitStack()
    async with stack:
        run = await stack.enter_async_context(_started(state, run_request, stop=shutdown, idempotency=idempotency))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = _stream(run, body.model, include_usage, stack.pop_all())
    return event_stream(
        stream,
        settings=state.settings,
        shutdown=shutdown,
        headers=_run_headers(run),
        open_streams=state.metrics.open_streams,
    )


@asynccontextmanager
async def _started(
    state: AppState, request: RunRequest, *, stop: anyio.Event | None = None, idempotency: IdempotencyKey | None
) -> AsyncIterator[StartedRun]:
    """The run this request is answered by: the paused run its message decided to go on with (the
    answer to "Reply approve or deny."), or a new one."""
    async with AsyncExitStack() as stack:
        run = await stack.enter_async_context(decided_in_chat(state, request, stop=stop))
        if run is None:
            run = await stack.enter_async_context(start_run(state, request, stop=stop, idempotency=idempotency))
        yield run


def _run_headers(run: StartedRun) -> dict[str, str]:
    """`X-Run-ID` (the run to read back at `/v1/runs/{run_id}`) and the conversation header."""
    return {"X-Run-ID": run.run_id, **_conversation_header(run)}


def _conversation_header(run: StartedRun | RunRequest) -> dict[str, str]:
    """`X-Conversation-ID`: the run's conversation (a replayed run's is the first request's), if it has one."""
    return {"X-Conversation-ID": header_text(run.conversation_key)} if run.conversation_key else {}


def _run_request(request: Request, body: ChatCompletionRequest, *, user_id: str) -> RunRequest:
    conversation_key = _conversation_key(request)
    unstored = _is_background_task(body.messages) or _is_unstored_chat(request)
    history, new_messages, system_messages = _split_turn(body.messages)
    return RunRequest(
        user_id=user_id,
        request_id=request.state.request_id,
        assistant=body.model,
        conversation_key=None if unstored else (conversation_key or conversations.new_conversation_key()),
        new_conversation=conversation_key is None,
        new_messages=new_messages,
        conversation_policy=conversation_policy(request, request.state.app.settings),
        # An unstored turn has no window to draw on: what the client sent is all the model gets.
        history=list(body.messages) if unstored else history,
        system_messages=system_messages,
        tools=body.tools,
        tool_choice=body.tool_choice,
        params=ModelParams(
            temperature=body.temperature,
            top_p=body.top_p,
            max_tokens=body.max_tokens,
            max_completion_tokens=body.max_completion_tokens,
            stop=[body.stop] if isinstance(body.stop, str) else body.stop,
            parallel_tool_calls=body.parallel_tool_calls,
            seed=body.seed,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            logit_bias=body.logit_bias,
            logprobs=body.logprobs,
            top_logprobs=body.top_logprobs,
            reasoning_effort=body.reasoning_effort,
            response_format=body.response_format_sent(),
        ),
    )


def _conversation_key(request: Request) -> str | None:
    for name in CONVERSATION_HEADERS:
        value = text_header(request.headers, name)
        if value is not None and value.strip():
            return conversations.parse_key(value, param=name)
    return None


def _is_unstored_chat(request: Request) -> bool:
    """An Open WebUI chat kept nowhere, unless the client also named a conversation with X-Conversation-ID."""
    if request.headers.get("x-conversation-id", "").strip():
        return False
    return request.headers.get("x-openwebui-chat-id", "").strip().startswith(UNSTORED_CHAT_PREFIXES)


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


async def _collect(run: StartedRun, model: str) -> dict[str, object]:
    text: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    async for progress in run.progress:
        match progress:
            case Text():
                text.append(progress.text)
            case ClientToolCall():
                call = calls.setdefault(progress.index, {"id": "", "name": "", "arguments": ""})
                if progress.call_id is not None:
                    call["id"], call["name"] = progress.call_id, progress.name or ""
                call["arguments"] += progress.arguments
            case ToolsOffered() | ToolCall() | ToolResult():
                pass  # the server's own tools: their effect is in the answer
            case Restarted():
                # Nothing was sent yet: the new attempt's answer is the answer.
                text.clear()
                calls.clear()
            case Completed():
                return _completion(run, model, "".join(text), calls, progress)
            case Cancelled() | AwaitingApproval():
                # Stopped, or waiting for a decision its text asks for: what it said is the answer, as a
                # finished one (the next message in the conversation may be "approve" or "deny").
                return _completion(run, model, "".join(text), calls, Completed(finish_reason="stop", usage=Usage()))
            case Failed():
                raise RunFailure(progress.message, code=progress.code)
            case Detached():
                raise ServiceUnavailable(progress.message, code=progress.code)
            case _:
                assert_never(progress)
    raise AssertionError("follow() always ends with Completed, Failed or Detached")


def _completion(
    run: StartedRun, model: str, text: str, calls: dict[int, dict[str, str]], done: Completed
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
        "created": unix_seconds(run.created_at),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": logprobs_body(done.logprobs),
                "finish_reason": done.finish_reason,
            }
        ],
        "usage": usage_body(done.usage),
    }


def _completion_id(run: StartedRun) -> str:
    return completion_id_of(run.run_id)


def completion_id_of(run_id: str) -> str:
    """A completion is its run: `chatcmpl-<hex>` names `run_<hex>`."""
    return "chatcmpl-" + run_id.removeprefix("run_")


async def _stream(
    run: StartedRun, model: str, include_usage: bool, cleanup: contextlib.AsyncExitStack
) -> AsyncIterator[dict[str, str]]:
    writer = ChunkWriter(completion_id=_completion_id(run), created=unix_seconds(run.created_at) or 0, model=model)
    async with cleanup:
        async for chunk in stream_chunks(run.progress, writer, include_usage=include_usage, run_id=run.run_id):
            yield chunk


async def stream_chunks(
    progress_items: AsyncIterator[RunProgress], writer: ChunkWriter, *, include_usage: bool, run_id: str
) -> AsyncIterator[dict[str, str]]:
    """A run as `chat.completion.chunk` events, each with the SSE `id:` of the run event it shows (the
    official clients ignore it; `GET /v1/chat/completions/{id}/stream` resumes after it), then `[DONE]`."""
    async for progress in progress_items:
        match progress:
            case Text():
                yield {"id": str(progress.seq), "data": writer.text(progress.text)}
            case ClientToolCall():
                yield {"id": str(progress.seq), "data": writer.tool_call(progress)}
            case ToolsOffered() | ToolCall() | ToolResult():
                pass  # the server's own tools never reach an OpenAI client as `tool_calls`
            case Restarted():
                # The new answer cannot be spliced onto the old; it is stored in the conversation.
                yield {"data": _error_data(RESTARTED_MESSAGE, "run_restarted")}
                break
            case Completed():
                yield {"id": str(progress.seq), "data": writer.finish(progress.finish_reason, progress.logprobs)}
                if include_usage:
                    yield {"data": writer.usage(progress.usage)}
            case Cancelled() | AwaitingApproval():
                # Stopped, or waiting for the decision its text asks for: the answer ends here, as
                # OpenAI ends a stopped stream.
                yield {"id": str(progress.seq), "data": writer.finish("stop")}
            case Failed() | Detached():
                if isinstance(progress, Detached):
                    log.info("stream.detached", run_id=run_id, code=progress.code)
                yield {"data": _error_data(progress.message, progress.code)}
            case _:
                assert_never(progress)
    yield {"data": "[DONE]"}


def _error_data(message: str, code: str) -> str:
    return json.dumps(error_body(message, type_="server_error", code=code))
