"""`POST /chatkit`: the ChatKit protocol, for OpenAI's ChatKit web component and any other client of it.

Everything a request can be refused for is checked before ChatKit's server sees it, so a refusal is
a plain HTTP error in our shape (api/errors.py), never a stream that starts and then fails: 401
without credentials, 400 for a request that is not valid ChatKit or asks for what this server does
not do (attachments, client tools, widget actions, retries, transcription), 404 for a thread that
is not the caller's. Only then does `ChatKitServer.process` run, with the caller in its context.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import anyio
import anyio.to_thread
from chatkit.types import (
    ChatKitReq,
    ItemsFeedbackReq,
    ItemsListReq,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsDeleteReq,
    ThreadsGetByIdReq,
    ThreadsListReq,
    ThreadsUpdateReq,
    UserMessageInput,
)
from pydantic import TypeAdapter, ValidationError
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response

from api.body import read_json
from api.chatkit_items import user_text
from api.chatkit_store import ATTACHMENTS_UNSUPPORTED, ChatKitContext
from api.state import AppState
from api.todo_routes import MAX_MESSAGE_CHARS, SHUTDOWN_GRACE_S
from domain import conversations
from domain.database import unavailable_on_connection_errors
from domain.errors import InvalidRequest, NotFound
from domain.pagination import MAX_LIMIT
from domain.threads import MAX_TITLE_CHARS

CHATKIT_PATH = "/chatkit"
SUPPORTED = (
    ThreadsCreateReq,
    ThreadsAddUserMessageReq,
    ThreadsGetByIdReq,
    ThreadsListReq,
    ItemsListReq,
    ThreadsUpdateReq,
    ThreadsDeleteReq,
    ItemsFeedbackReq,
)

_requests: TypeAdapter[ChatKitReq] = TypeAdapter(ChatKitReq)

Process = Callable[[bytes, ChatKitContext], Awaitable[bytes | AsyncIterator[bytes]]]
_loaded: list[Process] = []


async def _process() -> Process:
    """ChatKit's server, loaded on first use, in a thread: `chatkit.server` brings the OpenAI Agents SDK
    with it, a second or more of imports that would otherwise stall every stream of this process."""
    if not _loaded:
        module = await anyio.to_thread.run_sync(importlib.import_module, "api.chatkit_server")
        _loaded.append(cast(Process, module.process))
    return _loaded[0]


async def chatkit(request: Request) -> Response:
    state: AppState = request.state.app
    user_id = await state.authenticator.authenticate(request.headers.get("authorization"))
    data = await read_json(request, max_bytes=state.settings.max_body_bytes)
    parsed = _parse(data)
    _check(parsed)
    thread_id = getattr(parsed.params, "thread_id", None)
    if isinstance(thread_id, str):
        async with unavailable_on_connection_errors(), state.db_engine.connect() as connection:
            if await conversations.get(connection, user_id=user_id, key=thread_id) is None:
                raise NotFound(f"thread '{thread_id}' not found", param="thread_id")
    context = ChatKitContext(state=state, user_id=user_id, request_id=request.state.request_id, stop=anyio.Event())
    process = await _process()
    result = await process(json.dumps(data).encode(), context)
    if isinstance(result, bytes):
        return Response(result, media_type="application/json")
    return EventSourceResponse(
        result,
        ping=state.settings.keepalive_s,
        sep="\n",
        shutdown_event=context.stop,
        shutdown_grace_period=SHUTDOWN_GRACE_S,
    )


def _parse(data: Any) -> ChatKitReq:
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        return _requests.validate_python(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = ".".join(str(part) for part in error["loc"]) or None
        raise InvalidRequest(f"{param}: {error['msg']}" if param else str(error["msg"]), param=param) from None


def _check(request: ChatKitReq) -> None:
    """Refuse what this server does not do, and input it would only fail on later."""
    if not isinstance(request, SUPPORTED):
        raise InvalidRequest(f"'{request.type}' is not supported by this server", param="type")
    if isinstance(request, ThreadsCreateReq | ThreadsAddUserMessageReq):
        _check_input(request.params.input)
    elif isinstance(request, ThreadsListReq | ItemsListReq):
        limit = request.params.limit
        if limit is not None and not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be from 1 to {MAX_LIMIT}", param="params.limit")
    elif isinstance(request, ThreadsUpdateReq) and len(request.params.title) > MAX_TITLE_CHARS:
        raise InvalidRequest(f"title is longer than {MAX_TITLE_CHARS} characters", param="params.title")


def _check_input(given: UserMessageInput) -> None:
    if given.attachments:
        raise InvalidRequest(ATTACHMENTS_UNSUPPORTED, param="params.input.attachments")
    if not user_text(given.content).strip():
        raise InvalidRequest("the message is empty", param="params.input.content")
    if len(user_text(given.content, given.quoted_text)) > MAX_MESSAGE_CHARS:
        raise InvalidRequest(f"the message is longer than {MAX_MESSAGE_CHARS} characters", param="params.input")
