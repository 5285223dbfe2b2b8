"""The life of a run in the database: accepted, started, finished or failed.

Both ends of a run are single transactions. Acceptance writes the run and the user's turn together, so
an accepted request is never lost; completion writes the answer and the final state together, and
only while the run is not already finished, so a second execution of the same job writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain import conversations
from domain.chat import ChatMessage
from domain.events import Usage
from domain.models import Message, Run, utcnow

FINISHED = ("succeeded", "failed")


@dataclass(frozen=True, kw_only=True)
class AcceptedTurn:
    run_id: str
    conversation_id: int | None
    conversation_key: str | None


def storable_text(text: str) -> str:
    """Model output is stored as it came, except what no database accepts: NUL, unpaired surrogates."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def message_row(
    *, item_id: str, user_id: str, conversation_id: int, run_id: str | None, message: ChatMessage
) -> Message:
    return Message(
        item_id=item_id,
        user_id=user_id,
        conversation_id=conversation_id,
        run_id=run_id,
        role=message.role,
        content=storable_text(message.text),
        tool_calls=[call.model_dump() for call in message.tool_calls] if message.tool_calls else None,
        tool_call_id=message.tool_call_id,
    )


async def accept(
    session: AsyncSession,
    *,
    run_id: str,
    user_id: str,
    assistant: str,
    request_id: str,
    conversation_key: str | None,
    new_messages: Sequence[ChatMessage],
) -> AcceptedTurn:
    """Record the run and the new turn. `conversation_key=None` means a turn that is not stored."""
    conversation_id: int | None = None
    if conversation_key is not None:
        conversation = await conversations.get_or_create(session, user_id=user_id, key=conversation_key)
        await session.flush()
        conversation_id = conversation.id
        session.add_all(
            message_row(
                item_id=f"{run_id}-in{index}",
                user_id=user_id,
                conversation_id=conversation_id,
                run_id=run_id,
                message=message,
            )
            for index, message in enumerate(new_messages)
        )
    session.add(
        Run(
            id=run_id,
            user_id=user_id,
            conversation_id=conversation_id,
            assistant=assistant,
            request_id=request_id,
        )
    )
    return AcceptedTurn(run_id=run_id, conversation_id=conversation_id, conversation_key=conversation_key)


async def load(session: AsyncSession, run_id: str) -> Run | None:
    return await session.get(Run, run_id)


async def mark_started(session: AsyncSession, *, run_id: str, attempt: int) -> bool:
    """Claim the run for this attempt; False when it is already finished (a duplicate delivery)."""
    result = await session.execute(
        update(Run).where(Run.id == run_id, Run.status.not_in(FINISHED)).values(status="running", attempt=attempt)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def finish(
    session: AsyncSession,
    *,
    run: Run,
    attempt: int,
    reply: ChatMessage | None,
    usage: Usage,
    extra: Sequence[Message] = (),
) -> bool:
    """Store the answer and close the run. Returns False, writing nothing, if it was already closed."""
    result = await session.execute(
        update(Run)
        .where(Run.id == run.id, Run.status.not_in(FINISHED))
        .values(status="succeeded", attempt=attempt, usage=usage.model_dump(), finished_at=utcnow())
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    if run.conversation_id is not None:
        session.add_all(extra)
        if reply is not None:
            session.add(
                message_row(
                    item_id=f"{run.id}-out",
                    user_id=run.user_id,
                    conversation_id=run.conversation_id,
                    run_id=run.id,
                    message=reply,
                )
            )
    return True


async def fail(session: AsyncSession, *, run_id: str, attempt: int, error: str) -> bool:
    result = await session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status.not_in(FINISHED))
        .values(status="failed", attempt=attempt, error=error, finished_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def stored_reply(session: AsyncSession, run_id: str) -> Message | None:
    result = await session.execute(select(Message).where(Message.item_id == f"{run_id}-out"))
    return result.scalar_one_or_none()


def usage_of(run: Run) -> Usage:
    data: dict[str, Any] = run.usage or {}
    return Usage.model_validate(data)
