"""Conversations and their stored messages, always scoped by user."""

from __future__ import annotations

import operator
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Row, Select, and_, asc, bindparam, desc, func, or_, select, update
from sqlalchemy import delete as sa_delete
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from domain.database import InsertOrNothing
from domain.errors import InvalidRequest
from domain.models import UNFINISHED, Conversation, Message, Run, ToolCall, utcnow
from domain.text import check_storable

MAX_KEY_LENGTH = 255


def new_conversation_key() -> str:
    return "conv_" + secrets.token_hex(12)


def parse_key(raw: str, *, param: str) -> str:
    """A conversation id as a client gave it, in a body, a header or a path, checked the same way for all.

    Ids are opaque to us: anything printable goes, `/` included (paths take it as `%2F` or as it is).
    Surrounding whitespace goes, as a header loses it anyway; a control character is invisible where a
    person reads it, so it is refused.
    """
    key = check_storable(raw.strip(), param=param, max_chars=MAX_KEY_LENGTH)
    if not key:
        raise InvalidRequest(f"{param} must not be empty", param=param)
    if any(unicodedata.category(char) == "Cc" for char in key):
        raise InvalidRequest(f"{param} must not contain control characters", param=param)
    return key


def title_from(text: str, *, max_chars: int = 80) -> str | None:
    """A conversation's title: its first message, on one line, cut at a word if it is long."""
    line = " ".join(text.split())
    if len(line) <= max_chars:
        return line or None
    return line[:max_chars].rsplit(" ", 1)[0].rstrip(",.;:") + "…"


async def get_or_create_id(
    connection: AsyncConnection, *, user_id: str, key: str, known_new: bool = False, title: str | None = None
) -> int:
    """The id of the user's conversation named `key`, created on first use, its `updated_at` bumped.

    Two requests may name the same new conversation at once: the insert that loses the race does
    nothing (ON CONFLICT), and the loser reads the winner's row. `known_new` skips the look-up for a
    key this process has just made up.
    """
    now = utcnow()
    if not known_new:
        bumped = await connection.execute(_BUMP, {"p_user_id": user_id, "p_key": key, "now": now})
        existing = bumped.scalar_one_or_none()
        if existing is not None:
            return existing
    created = await connection.execute(
        _CREATE.on(connection), {"user_id": user_id, "key": key, "title": title, "created_at": now, "updated_at": now}
    )
    conversation_id = created.scalar_one_or_none()
    if conversation_id is None:
        winner = await connection.execute(_FIND, {"p_user_id": user_id, "p_key": key})
        conversation_id = winner.scalar_one()
    return conversation_id


# Built once: a turn goes through them (see `domain.database.InsertOrNothing` for why).
# Named apart from the columns: an UPDATE's parameters may not share a column's name.
_OF_USER_BY_KEY = (Conversation.user_id == bindparam("p_user_id"), Conversation.key == bindparam("p_key"))
_BUMP = (
    update(Conversation)
    .where(*_OF_USER_BY_KEY)
    .values(updated_at=bindparam("now", type_=Conversation.__table__.c.updated_at.type))
    .returning(Conversation.id)
)
_CREATE = InsertOrNothing(Conversation, index_elements=["user_id", "key"], returning=Conversation.id)
_FIND = select(Conversation.id).where(*_OF_USER_BY_KEY)


async def recent_messages(
    connection: AsyncConnection, *, user_id: str, conversation_id: int, limit: int, up_to_run: str | None = None
) -> Sequence[Row[Any]]:
    """The newest `limit` messages, oldest first, in the order of the turns they belong to.

    With `up_to_run`, the turns that came after that run are left out: a turn sent while an earlier
    one was still running waits for it (one turn at a time per conversation) and must see its answer,
    stored after the later turn's input, but not the other way round.
    """
    params = {"user_id": user_id, "conversation_id": conversation_id, "limit": limit}
    if up_to_run is None:
        result = await connection.execute(_RECENT, params)
    else:
        result = await connection.execute(_RECENT_UP_TO_RUN, {**params, "up_to_run": up_to_run})
    return list(reversed(result.all()))


def _recent_messages(*, up_to_run: bool) -> Select[Any]:
    turn = aliased(Run)
    turn_time = func.coalesce(turn.created_at, Message.created_at)
    query = (
        select(Message)
        .outerjoin(turn, turn.id == Message.run_id)
        .where(Message.user_id == bindparam("user_id"), Message.conversation_id == bindparam("conversation_id"))
    )
    if up_to_run:
        this_turn = select(Run.created_at).where(Run.id == bindparam("up_to_run")).scalar_subquery()
        query = query.where(turn_time <= this_turn)
    return query.order_by(turn_time.desc(), Message.id.desc()).limit(bindparam("limit", type_=Integer))


# Built once: every run reads its history through one of them (see `domain.database.InsertOrNothing`).
_RECENT = _recent_messages(up_to_run=False)
_RECENT_UP_TO_RUN = _recent_messages(up_to_run=True)


# (updated_at, id): conversations are listed in this order, so it is also a listing's cursor.
ConversationPosition = tuple[datetime, int]


@dataclass(frozen=True, kw_only=True)
class ConversationView:
    id: int
    key: str
    title: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def position(self) -> ConversationPosition:
        """Where the conversation stands in a listing: its (updated_at, id)."""
        return self.updated_at, self.id


_COLUMNS = (Conversation.id, Conversation.key, Conversation.title, Conversation.created_at, Conversation.updated_at)


async def get(connection: AsyncConnection, *, user_id: str, key: str) -> ConversationView | None:
    """The user's conversation named `key`; another user's is as missing as one that never was."""
    result = await connection.execute(select(*_COLUMNS).where(Conversation.user_id == user_id, Conversation.key == key))
    row = result.one_or_none()
    return None if row is None else ConversationView(**row._asdict())


async def list_page(
    connection: AsyncConnection,
    *,
    user_id: str,
    limit: int,
    after: ConversationPosition | None = None,
    descending: bool = True,
) -> list[ConversationView]:
    """The user's conversations in (updated_at, id) order, newest first when `descending`, going on past
    `after`, the position of the last one already seen."""
    query = select(*_COLUMNS).where(Conversation.user_id == user_id)
    if after is not None:
        updated_at, conversation_id = after
        past = operator.lt if descending else operator.gt
        query = query.where(
            or_(
                past(Conversation.updated_at, updated_at),
                and_(Conversation.updated_at == updated_at, past(Conversation.id, conversation_id)),
            )
        )
    direction = desc if descending else asc
    result = await connection.execute(
        query.order_by(direction(Conversation.updated_at), direction(Conversation.id)).limit(limit)
    )
    return [ConversationView(**row._asdict()) for row in result]


async def delete(connection: AsyncConnection, *, user_id: str, key: str) -> list[tuple[str, int]] | None:
    """Delete the conversation with its messages, runs and tool calls; the user's tasks stay.

    None when the user has no such conversation; otherwise its runs that were still queued or
    running, as (id, attempt), for the caller to stop.
    """
    conversation = await get(connection, user_id=user_id, key=key)
    if conversation is None:
        return None
    active = await connection.execute(
        select(Run.id, Run.attempt).where(
            Run.user_id == user_id, Run.conversation_id == conversation.id, Run.status.in_(UNFINISHED)
        )
    )
    stopped = [(row.id, row.attempt) for row in active]
    # Children first: SQLite enforces ON DELETE CASCADE only when foreign keys are switched on, and
    # a database someone else opened may not have them on.
    for table in (ToolCall, Message, Run):
        await connection.execute(
            sa_delete(table).where(table.user_id == user_id, table.conversation_id == conversation.id)
        )
    await connection.execute(sa_delete(Conversation).where(Conversation.id == conversation.id))
    return stopped


@dataclass(frozen=True, kw_only=True)
class StoredMessage:
    id: int
    role: str
    content: str
    created_at: datetime
    run_id: str | None
    tool_calls: list[dict[str, Any]]


async def list_messages(
    connection: AsyncConnection, *, user_id: str, conversation_id: int, limit: int, after_id: int | None = None
) -> list[StoredMessage]:
    """Oldest first, each assistant message with the server-side tool calls its run made."""
    query = select(Message.id, Message.role, Message.content, Message.created_at, Message.run_id).where(
        Message.user_id == user_id, Message.conversation_id == conversation_id
    )
    if after_id is not None:
        query = query.where(Message.id > after_id)
    rows = (await connection.execute(query.order_by(Message.id).limit(limit))).all()
    run_ids = {row.run_id for row in rows if row.role == "assistant" and row.run_id}
    calls: dict[str, list[dict[str, Any]]] = {}
    if run_ids:
        result = await connection.execute(
            select(ToolCall.run_id, ToolCall.tool_name, ToolCall.arguments, ToolCall.result, ToolCall.is_error)
            .where(ToolCall.user_id == user_id, ToolCall.run_id.in_(run_ids))
            .order_by(ToolCall.run_id, ToolCall.ordinal, ToolCall.id)
        )
        for call in result:
            calls.setdefault(call.run_id, []).append(
                {"tool": call.tool_name, "args": call.arguments, "result": call.result, "is_error": call.is_error}
            )
    return [
        StoredMessage(
            id=row.id,
            role=row.role,
            content=row.content,
            created_at=row.created_at,
            run_id=row.run_id,
            tool_calls=calls.get(row.run_id, []) if row.role == "assistant" and row.run_id else [],
        )
        for row in rows
    ]
