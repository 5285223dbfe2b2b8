"""`POST /chatkit`: the ChatKit protocol, for OpenAI's ChatKit web component and any other client of it.

Everything a request can be refused for is checked before ChatKit's server sees it, so a refusal is
a plain HTTP error in our shape (api/errors.py), never a stream that starts and then fails: 401
without credentials, 400 for a request that is not valid ChatKit or asks for what this server does
not do (attachments, client tools, widget actions, retries, transcription), 404 for a thread that
is not the caller's. Only then does ChatKit's server run, with the caller in its context.
"""

from __future__ import annotations

import importlib
import json
from typing import TYPE_CHECKING

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
from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from api.body import read_json, validate
from api.chatkit.items import user_text
from api.chatkit.store import ATTACHMENTS_UNSUPPORTED, ChatKitContext
from api.relay.sse import event_stream
from api.state import AppState
from domain import conversations
from domain.assistants import TODO_MAX_MESSAGE_CHARS
from domain.database import unavailable_on_connection_errors
from domain.errors import InvalidRequest, NotFound
from domain.pagination import MAX_LIMIT
from domain.text import check_storable
from domain.threads import MAX_TITLE_CHARS

if TYPE_CHECKING:
    from api.chatkit.server import SwitchboardChatKitServer

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


class ChatKitEndpoint:
    """`POST /chatkit`. ChatKit's server is loaded on the first request, in a thread: `chatkit.server`
    brings the OpenAI Agents SDK with it, a second or more of imports that would otherwise stall every
    stream of this process, and processes that never see a ChatKit request do not pay for it."""

    def __init__(self) -> None:
        self._server: SwitchboardChatKitServer | None = None
        self._loading = anyio.Lock()

    async def _loaded(self) -> SwitchboardChatKitServer:
        async with self._loading:
            if self._server is None:
                module = await anyio.to_thread.run_sync(importlib.import_module, "api.chatkit.server")
                self._server = module.SwitchboardChatKitServer()
            return self._server

    async def handle(self, request: Request) -> Response:
        state: AppState = request.state.app
        user_id = await state.authenticator.authenticate(request.headers)
        data = await read_json(request, max_bytes=state.settings.max_body_bytes)
        parsed = validate(_requests, data)
        _check(parsed)
        thread_id = getattr(parsed.params, "thread_id", None)
        if isinstance(thread_id, str):
            thread_id = conversations.parse_key(thread_id, param="params.thread_id")
            async with unavailable_on_connection_errors(), state.db_engine.connect() as connection:
                if await conversations.get(connection, user_id=user_id, key=thread_id) is None:
                    raise NotFound(f"thread '{thread_id}' not found", param="thread_id")
        context = ChatKitContext(state=state, user_id=user_id, request_id=request.state.request_id, stop=anyio.Event())
        server = await self._loaded()
        result = await server.answer(json.dumps(data).encode(), context)
        if isinstance(result, bytes):
            return Response(result, media_type="application/json")
        return event_stream(
            result, settings=state.settings, shutdown=context.stop, open_streams=state.metrics.open_streams
        )


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
    elif isinstance(request, ThreadsUpdateReq):
        check_storable(request.params.title, param="params.title", max_chars=MAX_TITLE_CHARS)


def _check_input(given: UserMessageInput) -> None:
    if given.attachments:
        raise InvalidRequest(ATTACHMENTS_UNSUPPORTED, param="params.input.attachments")
    if not user_text(given.content).strip():
        raise InvalidRequest("the message is empty", param="params.input.content")
    if len(user_text(given.content, given.quoted_text)) > TODO_MAX_MESSAGE_CHARS:
        raise InvalidRequest(f"the message is longer than {TODO_MAX_MESSAGE_CHARS} characters", param="params.input")
