"""Conversations and their stored messages, always scoped by user."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.models import Conversation, Message, utcnow

MAX_KEY_LENGTH = 255


def new_conversation_key() -> str:
    return "conv_" + secrets.token_hex(12)


async def get_or_create_id(connection: AsyncConnection, *, user_id: str, key: str, known_new: bool = False) -> int:
    """The id of the user's conversation named `key`, created on first use, its `updated_at` bumped.

    Two requests may name the same new conversation at once: the insert that loses the race does
    nothing (ON CONFLICT), and the loser reads the winner's row. `known_new` skips the look-up for a
    key this process has just made up.
    """
    now = utcnow()
    if not known_new:
        bumped = await connection.execute(
            update(Conversation)
            .where(Conversation.user_id == user_id, Conversation.key == key)
            .values(updated_at=now)
            .returning(Conversation.id)
        )
        existing = bumped.scalar_one_or_none()
        if existing is not None:
            return existing
    insert = postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
    created = await connection.execute(
        insert(Conversation)
        .values(user_id=user_id, key=key, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["user_id", "key"])
        .returning(Conversation.id)
    )
    conversation_id = created.scalar_one_or_none()
    if conversation_id is None:
        winner = await connection.execute(
            select(Conversation.id).where(Conversation.user_id == user_id, Conversation.key == key)
        )
        conversation_id = winner.scalar_one()
    return conversation_id


async def recent_messages(
    connection: AsyncConnection, *, user_id: str, conversation_id: int, limit: int, up_to_run: str | None = None
) -> Sequence[Row[Any]]:
    """The newest `limit` messages, oldest first.

    With `up_to_run`, messages stored after that run's own input are left out: a turn sent while an
    earlier one is still running must not leak into the earlier one's context.
    """
    query = select(Message).where(Message.user_id == user_id, Message.conversation_id == conversation_id)
    if up_to_run is not None:
        last_input = (
            select(func.max(Message.id))
            .where(Message.run_id == up_to_run, Message.conversation_id == conversation_id)
            .scalar_subquery()
        )
        query = query.where(Message.id <= last_input)
    result = await connection.execute(query.order_by(Message.id.desc()).limit(limit))
    return list(reversed(result.all()))
