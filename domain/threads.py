"""A conversation seen as a thread of items: its user and assistant messages and its runs' tool calls.

This is the shape chat UIs such as ChatKit want, read straight from the stored history, never a second
copy of it. Every entry has a position that orders the thread: a message is `(message id, 0, 0)`; a
run's tool call is `(id of the run's last user message, 1, ordinal)`, so a run's calls come right after
the turn that asked for them, in the order the run made them. Only user messages and assistant
messages with text are entries: system, developer and `tool` messages, and an assistant turn that
only called client-side tools, are history for the model, not items for a reader.

Everything is scoped by user, like the rest of `domain/`. Core statements on a plain connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, false, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.database import conflict_insert
from domain.models import Conversation, Message, ToolCall, utcnow
from domain.runs import storable_text
from domain.tool_calls import recorded_call_id

# (anchor message id, 0 for a message or 1 for a tool call, the tool call's ordinal)
Position = tuple[int, int, int]
MESSAGE, TOOL_CALL = 0, 1
MAX_TITLE_CHARS = 255


@dataclass(frozen=True, kw_only=True)
class MessageEntry:
    position: Position
    item_id: str
    role: str
    content: str
    run_id: str | None
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class ToolCallEntry:
    position: Position
    run_id: str
    ordinal: int
    # The model's id for the call, or the stable one the worker gives a call that had none.
    call_id: str
    tool_name: str
    arguments: dict[str, Any]
    # The tool's payload, or `{"error": message}` when `is_error`.
    result: Any
    is_error: bool
    created_at: datetime


Entry = MessageEntry | ToolCallEntry


# ------------------------------------------------------------------ threads


async def save_conversation(connection: AsyncConnection, *, user_id: str, key: str, title: str | None) -> None:
    """Create the user's conversation `key`, or retitle it; renaming does not make it recent."""
    title = title[:MAX_TITLE_CHARS] if title else None
    renamed = await connection.execute(
        update(Conversation).where(Conversation.user_id == user_id, Conversation.key == key).values(title=title)
    )
    if renamed.rowcount:
        return
    now = utcnow()
    await connection.execute(
        conflict_insert(connection, Conversation)
        .values(user_id=user_id, key=key, title=title, created_at=now, updated_at=now)
        .on_conflict_do_update(index_elements=["user_id", "key"], set_={"title": title})
    )


# ------------------------------------------------------------------ items


def _shown_messages(user_id: str, conversation_id: int) -> ColumnElement[bool]:
    return and_(
        Message.user_id == user_id,
        Message.conversation_id == conversation_id,
        or_(Message.role == "user", and_(Message.role == "assistant", Message.content != "")),
    )


_MESSAGE_COLUMNS = (Message.id, Message.item_id, Message.role, Message.content, Message.run_id, Message.created_at)


def _message_entry(row: Any) -> MessageEntry:
    return MessageEntry(
        position=(row.id, MESSAGE, 0),
        item_id=row.item_id,
        role=row.role,
        content=row.content,
        run_id=row.run_id,
        created_at=row.created_at,
    )


def _tool_calls_with_anchor(user_id: str, conversation_id: int) -> Any:
    """The conversation's tool calls, each with the id of its run's last user message as `anchor`."""
    inputs = (
        select(Message.run_id.label("run_id"), func.max(Message.id).label("anchor"))
        .where(
            Message.user_id == user_id,
            Message.conversation_id == conversation_id,
            Message.role == "user",
            Message.run_id.is_not(None),
        )
        .group_by(Message.run_id)
        .subquery()
    )
    query = (
        select(
            ToolCall.run_id,
            ToolCall.ordinal,
            ToolCall.call_id,
            ToolCall.tool_name,
            ToolCall.arguments,
            ToolCall.result,
            ToolCall.is_error,
            ToolCall.created_at,
            inputs.c.anchor,
        )
        .join(inputs, inputs.c.run_id == ToolCall.run_id)
        .where(
            ToolCall.user_id == user_id,
            ToolCall.conversation_id == conversation_id,
            ToolCall.ordinal.is_not(None),
        )
    )
    return query, inputs.c.anchor


def _tool_call_entry(row: Any) -> ToolCallEntry:
    return ToolCallEntry(
        position=(row.anchor, TOOL_CALL, row.ordinal),
        run_id=row.run_id,
        ordinal=row.ordinal,
        call_id=recorded_call_id(row.run_id, row.call_id, row.ordinal),
        tool_name=row.tool_name,
        arguments=dict(row.arguments or {}),
        result=row.result,
        is_error=bool(row.is_error),
        created_at=row.created_at,
    )


async def entries(
    connection: AsyncConnection,
    *,
    user_id: str,
    conversation_id: int,
    limit: int,
    after: Position | None = None,
    descending: bool = False,
) -> list[Entry]:
    """Up to `limit` entries of the conversation in order (newest first if `descending`), past `after`."""
    messages = select(*_MESSAGE_COLUMNS).where(_shown_messages(user_id, conversation_id))
    calls, anchor = _tool_calls_with_anchor(user_id, conversation_id)
    if after is not None:
        at, kind, ordinal = after
        if descending:
            messages = messages.where(Message.id <= at if kind == TOOL_CALL else Message.id < at)
            calls = calls.where(
                or_(anchor < at, and_(anchor == at, ToolCall.ordinal < ordinal if kind == TOOL_CALL else false()))
            )
        else:
            messages = messages.where(Message.id > at)
            calls = calls.where(
                or_(anchor > at, and_(anchor == at, ToolCall.ordinal > ordinal if kind == TOOL_CALL else true()))
            )
    if descending:
        messages = messages.order_by(Message.id.desc())
        calls = calls.order_by(anchor.desc(), ToolCall.ordinal.desc())
    else:
        messages = messages.order_by(Message.id)
        calls = calls.order_by(anchor, ToolCall.ordinal)
    found: list[Entry] = [_message_entry(row) for row in await connection.execute(messages.limit(limit))]
    found += [_tool_call_entry(row) for row in await connection.execute(calls.limit(limit))]
    found.sort(key=lambda entry: entry.position, reverse=descending)
    return found[:limit]


async def message(
    connection: AsyncConnection, *, user_id: str, conversation_id: int, item_id: str
) -> MessageEntry | None:
    result = await connection.execute(
        select(*_MESSAGE_COLUMNS).where(_shown_messages(user_id, conversation_id), Message.item_id == item_id)
    )
    row = result.one_or_none()
    return None if row is None else _message_entry(row)


async def tool_call(
    connection: AsyncConnection, *, user_id: str, conversation_id: int, run_id: str, call_id: str
) -> ToolCallEntry | None:
    calls, _ = _tool_calls_with_anchor(user_id, conversation_id)
    rows = await connection.execute(calls.where(ToolCall.run_id == run_id))
    return next((entry for entry in map(_tool_call_entry, rows) if entry.call_id == call_id), None)


async def add_message(
    connection: AsyncConnection,
    *,
    item_id: str,
    user_id: str,
    conversation_id: int,
    run_id: str | None,
    role: str,
    content: str,
) -> bool:
    """Store a message once: a second write of the same `item_id` does nothing. True if it was new."""
    result = await connection.execute(
        conflict_insert(connection, Message)
        .values(
            item_id=item_id,
            user_id=user_id,
            conversation_id=conversation_id,
            run_id=run_id,
            role=role,
            content=storable_text(content),
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["item_id"])
        .returning(Message.id)
    )
    return result.scalar_one_or_none() is not None


async def delete_message(connection: AsyncConnection, *, user_id: str, conversation_id: int, item_id: str) -> bool:
    result = await connection.execute(
        delete(Message).where(
            Message.user_id == user_id, Message.conversation_id == conversation_id, Message.item_id == item_id
        )
    )
    return bool(result.rowcount)
