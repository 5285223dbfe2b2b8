"""Conversations and their stored messages, always scoped by user."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import Conversation, Message, utcnow

MAX_KEY_LENGTH = 255


def new_conversation_key() -> str:
    return "conv_" + secrets.token_hex(12)


async def find(session: AsyncSession, *, user_id: str, key: str) -> Conversation | None:
    result = await session.execute(select(Conversation).where(Conversation.user_id == user_id, Conversation.key == key))
    return result.scalar_one_or_none()


async def get_or_create(session: AsyncSession, *, user_id: str, key: str) -> Conversation:
    """The user's conversation named `key`, created on first use.

    Two requests may name the same new conversation at once; the loser of that race hits the unique
    constraint inside a savepoint and reads the winner's row instead.
    """
    existing = await find(session, user_id=user_id, key=key)
    if existing is not None:
        existing.updated_at = utcnow()
        return existing
    conversation = Conversation(user_id=user_id, key=key)
    try:
        async with session.begin_nested():
            session.add(conversation)
    except IntegrityError:
        winner = await find(session, user_id=user_id, key=key)
        if winner is None:
            raise
        return winner
    return conversation


async def recent_messages(
    session: AsyncSession, *, user_id: str, conversation_id: int, limit: int, up_to_run: str | None = None
) -> Sequence[Message]:
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
    result = await session.execute(query.order_by(Message.id.desc()).limit(limit))
    return list(reversed(result.scalars().all()))
