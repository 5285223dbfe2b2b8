"""The life of a run in the database: accepted, claimed, finished or failed.

Both ends of a run are single transactions. Acceptance writes the run and the user's turn together, so
an accepted request is never lost; completion writes the answer and the final state together, and
only while the run is not already finished, so a second execution of the same job writes nothing.

These are Core statements on a plain connection rather than ORM units of work: they run on every
request, and a session's bookkeeping would cost more CPU than the statements themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain import conversations
from domain.chat import ChatMessage
from domain.database import conflict_insert
from domain.errors import RunFailureCode
from domain.events import Usage
from domain.models import Message, Run, utcnow
from domain.run_request import RunRequest

FINISHED = ("succeeded", "failed")


@dataclass(frozen=True, kw_only=True)
class AcceptedTurn:
    run_id: str
    conversation_id: int | None
    conversation_key: str | None


@dataclass(frozen=True, kw_only=True)
class ClaimedRun:
    """What a worker needs to know of the run it has just claimed."""

    id: str
    user_id: str
    conversation_id: int | None


def storable_text(text: str) -> str:
    """Model output is stored as it came, except what no database accepts: NUL, unpaired surrogates."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def message_values(
    *, item_id: str, user_id: str, conversation_id: int, run_id: str | None, message: ChatMessage
) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "user_id": user_id,
        "conversation_id": conversation_id,
        "run_id": run_id,
        "role": message.role,
        "content": storable_text(message.text),
        "tool_calls": [call.model_dump() for call in message.tool_calls] if message.tool_calls else None,
        "tool_call_id": message.tool_call_id,
        "created_at": utcnow(),
    }


async def accept(connection: AsyncConnection, request: RunRequest) -> AcceptedTurn:
    """Record the run and the new turn. A request without a conversation key is a turn that is not stored."""
    conversation_key = request.conversation_key
    new_messages = request.new_messages
    run_id = request.run_id
    user_id = request.user_id
    conversation_id: int | None = None
    if conversation_key is not None:
        first_user = next((message.text for message in new_messages if message.role == "user"), "")
        conversation_id = await conversations.get_or_create_id(
            connection,
            user_id=user_id,
            key=conversation_key,
            known_new=request.new_conversation,
            title=conversations.title_from(first_user),
        )
    await connection.execute(
        insert(Run).values(
            id=run_id,
            user_id=user_id,
            conversation_id=conversation_id,
            assistant=request.assistant,
            status="queued",
            attempt=0,
            request_id=request.request_id,
            created_at=utcnow(),
        )
    )
    if conversation_id is not None and new_messages:
        await connection.execute(
            insert(Message),
            [
                message_values(
                    item_id=f"{run_id}-in{index}",
                    user_id=user_id,
                    conversation_id=conversation_id,
                    run_id=run_id,
                    message=message,
                )
                for index, message in enumerate(new_messages)
            ],
        )
    return AcceptedTurn(run_id=run_id, conversation_id=conversation_id, conversation_key=conversation_key)


async def load(connection: AsyncConnection, run_id: str) -> Row[Any] | None:
    result = await connection.execute(
        select(Run.id, Run.status, Run.error_code, Run.error, Run.usage).where(Run.id == run_id)
    )
    return result.one_or_none()


async def claim(connection: AsyncConnection, *, run_id: str, attempt: int) -> ClaimedRun | None:
    """Mark the run as running in this attempt; None when it is missing or already finished."""
    result = await connection.execute(
        update(Run)
        .where(Run.id == run_id, Run.status.not_in(FINISHED))
        .values(status="running", attempt=attempt)
        .returning(Run.user_id, Run.conversation_id)
    )
    row = result.one_or_none()
    if row is None:
        return None
    return ClaimedRun(id=run_id, user_id=row.user_id, conversation_id=row.conversation_id)


async def finish(
    connection: AsyncConnection,
    *,
    run: ClaimedRun,
    attempt: int,
    reply: ChatMessage | None,
    usage: Usage,
) -> bool:
    """Store the answer and close the run. Returns False, writing nothing, if it was already closed."""
    result = await connection.execute(
        update(Run)
        .where(Run.id == run.id, Run.status.not_in(FINISHED))
        .values(status="succeeded", attempt=attempt, usage=usage.model_dump(), finished_at=utcnow())
    )
    if not result.rowcount:
        return False
    if run.conversation_id is not None and reply is not None:
        # Write-once by item id: the ChatKit surface may save the same answer under the same id.
        await connection.execute(
            conflict_insert(connection, Message)
            .values(
                **message_values(
                    item_id=f"{run.id}-out",
                    user_id=run.user_id,
                    conversation_id=run.conversation_id,
                    run_id=run.id,
                    message=reply,
                )
            )
            .on_conflict_do_nothing(index_elements=["item_id"])
        )
    return True


async def fail(connection: AsyncConnection, *, run_id: str, attempt: int, code: RunFailureCode, message: str) -> bool:
    result = await connection.execute(
        update(Run)
        .where(Run.id == run_id, Run.status.not_in(FINISHED))
        .values(status="failed", attempt=attempt, error_code=code, error=message, finished_at=utcnow())
    )
    return bool(result.rowcount)


def usage_of(run: Row[Any]) -> Usage:
    data: dict[str, Any] = run.usage or {}
    return Usage.model_validate(data)
