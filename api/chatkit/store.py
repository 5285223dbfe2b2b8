"""ChatKit's `Store` on our own database: threads are conversations, items are messages and tool calls.

Everything is scoped to the user in the request context; another user's thread is as missing as one
that never existed (`NotFound`). There is no second copy of the history:

- a thread is a conversation, its id the conversation's key, its title the conversation's title;
- a user message item is a row of `messages`, written once under its item id `{run_id}-in0` (see
  `api/chatkit/items.py`); the run that answers it is started with no new messages of its own;
- an assistant message item is the worker's `{run_id}-out` row. ChatKit saves it again when its
  stream ends; that write only ever inserts a row the worker did not (a succeeded run's answer the
  worker had nowhere to store) and never races the worker: it waits until the run has succeeded;
- a tool call item is the worker's `tool_calls` row, so ChatKit's own save of it writes nothing;
- anything else ChatKit may ask to save (widgets, hidden context) has no place in our history and
  is not kept.

Attachments are not supported.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import anyio
import structlog
from chatkit.store import Store, StoreItemType, default_generate_id
from chatkit.types import (
    AssistantMessageItem,
    Attachment,
    Page,
    ThreadItem,
    ThreadMetadata,
    UserMessageItem,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from api.chatkit.items import (
    input_item_id,
    item_of,
    run_of_input,
    run_of_output,
    tool_of,
    user_text,
)
from api.relay.cancel import cancel_removed_runs
from api.state import AppState
from domain import conversations, runs, threads
from domain.conversations import ConversationView
from domain.database import unavailable_on_connection_errors
from domain.errors import InvalidRequest, NotFound
from domain.pagination import MAX_LIMIT
from domain.run_request import new_run_id

log = structlog.get_logger("switchboard.api.chatkit")

ATTACHMENTS_UNSUPPORTED = "attachments are not supported by this server"


@dataclass(frozen=True, kw_only=True)
class ChatKitContext:
    """Who is asking, and what they reach through: made by the endpoint from the credentials."""

    state: AppState
    user_id: str
    request_id: str
    # Set when the server shuts down: a stream then ends, and the run goes on without it.
    stop: anyio.Event


def thread_of(conversation: ConversationView) -> ThreadMetadata:
    return ThreadMetadata(id=conversation.key, title=conversation.title, created_at=conversation.created_at)


class ConversationStore(Store[ChatKitContext]):
    def generate_thread_id(self, context: ChatKitContext) -> str:
        return conversations.new_conversation_key()

    def generate_item_id(self, item_type: StoreItemType, thread: ThreadMetadata, context: ChatKitContext) -> str:
        # ChatKit names the user's message before `respond` runs: the name picks the run that answers it.
        if item_type == "message":
            return input_item_id(new_run_id())
        return default_generate_id(item_type)

    # ------------------------------------------------------------------ threads

    async def load_thread(self, thread_id: str, context: ChatKitContext) -> ThreadMetadata:
        async with _connect(context) as connection:
            return thread_of(await _conversation(connection, context, thread_id))

    async def save_thread(self, thread: ThreadMetadata, context: ChatKitContext) -> None:
        async with _begin(context) as connection:
            await threads.save_conversation(connection, user_id=context.user_id, key=thread.id, title=thread.title)

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: ChatKitContext
    ) -> Page[ThreadMetadata]:
        async with _connect(context) as connection:
            cursor = None
            if after:
                cursor = await conversations.get(connection, user_id=context.user_id, key=after)
                if cursor is None:
                    raise InvalidRequest(f"no thread '{after}' to list after", param="after")
            found = await conversations.list_page(
                connection,
                user_id=context.user_id,
                limit=_bounded(limit) + 1,
                after=cursor.position if cursor else None,
                descending=order != "asc",
            )
        page = found[: _bounded(limit)]
        has_more = len(found) > len(page)
        return Page(
            data=[thread_of(item) for item in page], has_more=has_more, after=page[-1].key if has_more else None
        )

    async def delete_thread(self, thread_id: str, context: ChatKitContext) -> None:
        """The conversation goes with its messages, runs and tool calls; the user's tasks stay."""
        async with _begin(context) as connection:
            stopped = await conversations.delete(connection, user_id=context.user_id, key=thread_id)
        if stopped is None:
            raise NotFound(f"thread '{thread_id}' not found", param="thread_id")
        # Its turns still queued or running go with it.
        await cancel_removed_runs(context.state, stopped)

    # ------------------------------------------------------------------ items

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: ChatKitContext
    ) -> Page[ThreadItem]:
        async with _connect(context) as connection:
            conversation = await _conversation(connection, context, thread_id)
            position = None
            if after:
                entry = await _entry(connection, context, conversation.id, after)
                if entry is None:
                    raise InvalidRequest(f"no item '{after}' in thread '{thread_id}' to list after", param="after")
                position = entry.position
            found = await threads.entries(
                connection,
                user_id=context.user_id,
                conversation_id=conversation.id,
                limit=_bounded(limit) + 1,
                after=position,
                descending=order != "asc",
            )
        page = [item_of(entry, thread_id=thread_id) for entry in found[: _bounded(limit)]]
        has_more = len(found) > len(page)
        return Page(data=page, has_more=has_more, after=page[-1].id if has_more else None)

    async def load_item(self, thread_id: str, item_id: str, context: ChatKitContext) -> ThreadItem:
        async with _connect(context) as connection:
            conversation = await _conversation(connection, context, thread_id)
            entry = await _entry(connection, context, conversation.id, item_id)
        if entry is None:
            raise NotFound(f"item '{item_id}' not found in thread '{thread_id}'", param="item_id")
        return item_of(entry, thread_id=thread_id)

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: ChatKitContext) -> None:
        if isinstance(item, UserMessageItem):
            await self._add_user_message(thread_id, item, context)
        elif isinstance(item, AssistantMessageItem):
            await self._add_answer(thread_id, item, context)
        # Tool calls are the worker's rows already; other items have no place in our history.

    async def save_item(self, thread_id: str, item: ThreadItem, context: ChatKitContext) -> None:
        await self.add_thread_item(thread_id, item, context)

    async def delete_thread_item(self, thread_id: str, item_id: str, context: ChatKitContext) -> None:
        """Messages can go; a tool call stays, as the record of something that was done."""
        async with _begin(context) as connection:
            conversation = await _conversation(connection, context, thread_id)
            await threads.delete_message(
                connection, user_id=context.user_id, conversation_id=conversation.id, item_id=item_id
            )

    async def _add_user_message(self, thread_id: str, item: UserMessageItem, context: ChatKitContext) -> None:
        if item.attachments:
            raise InvalidRequest(ATTACHMENTS_UNSUPPORTED, param="attachments")
        async with _begin(context) as connection:
            conversation = await _conversation(connection, context, thread_id)
            await threads.add_message(
                connection,
                item_id=item.id,
                user_id=context.user_id,
                conversation_id=conversation.id,
                run_id=run_of_input(item.id),
                role="user",
                content=user_text(item.content, item.quoted_text),
            )

    async def _add_answer(self, thread_id: str, item: AssistantMessageItem, context: ChatKitContext) -> None:
        run_id = run_of_output(item.id)
        if run_id is None:
            log.warning("chatkit.answer_not_stored", item_id=item.id, reason="not a run's answer")
            return
        async with _begin(context) as connection:
            conversation = await _conversation(connection, context, thread_id)
            run = await runs.load(connection, run_id)
            # The worker stores the answer with the run's success; writing before that could beat it.
            if run is None or run.status != "succeeded":
                return
            await threads.add_message(
                connection,
                item_id=item.id,
                user_id=context.user_id,
                conversation_id=conversation.id,
                run_id=run_id,
                role="assistant",
                content="".join(part.text for part in item.content),
            )

    # ------------------------------------------------------------------ attachments

    async def save_attachment(self, attachment: Attachment, context: ChatKitContext) -> None:
        raise InvalidRequest(ATTACHMENTS_UNSUPPORTED)

    async def load_attachment(self, attachment_id: str, context: ChatKitContext) -> Attachment:
        raise InvalidRequest(ATTACHMENTS_UNSUPPORTED)

    async def delete_attachment(self, attachment_id: str, context: ChatKitContext) -> None:
        raise InvalidRequest(ATTACHMENTS_UNSUPPORTED)


def _bounded(limit: int) -> int:
    return max(1, min(limit, MAX_LIMIT))


@asynccontextmanager
async def _connect(context: ChatKitContext, *, begin: bool = False) -> AsyncIterator[AsyncConnection]:
    engine = context.state.db_engine
    opened = engine.begin() if begin else engine.connect()
    async with unavailable_on_connection_errors(), opened as connection:
        yield connection


def _begin(context: ChatKitContext) -> AbstractAsyncContextManager[AsyncConnection]:
    return _connect(context, begin=True)


async def _conversation(connection: AsyncConnection, context: ChatKitContext, thread_id: str) -> ConversationView:
    conversation = await conversations.get(connection, user_id=context.user_id, key=thread_id)
    if conversation is None:
        raise NotFound(f"thread '{thread_id}' not found", param="thread_id")
    return conversation


async def _entry(
    connection: AsyncConnection, context: ChatKitContext, conversation_id: int, item_id: str
) -> threads.Entry | None:
    tool = tool_of(item_id)
    if tool is not None:
        run_id, call_id = tool
        return await threads.tool_call(
            connection, user_id=context.user_id, conversation_id=conversation_id, run_id=run_id, call_id=call_id
        )
    return await threads.message(connection, user_id=context.user_id, conversation_id=conversation_id, item_id=item_id)
