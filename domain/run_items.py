"""What one run keeps in its conversation: the input it was given (its `-in<N>` messages), and
removing the run with everything it wrote (the Responses API's `DELETE /v1/responses/{id}`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.models import Message, Run, ToolCall


@dataclass(frozen=True, kw_only=True)
class InputMessage:
    item_id: str
    role: str
    content: str
    parts: list[Any] | None
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None


async def input_messages(connection: AsyncConnection, *, user_id: str, run_id: str) -> list[InputMessage]:
    """The messages the run's request added to its conversation, oldest first."""
    rows = await connection.execute(
        select(Message.item_id, Message.role, Message.content, Message.parts, Message.tool_calls, Message.tool_call_id)
        .where(Message.user_id == user_id, Message.run_id == run_id, Message.item_id.like(f"{run_id}-in%"))
        .order_by(Message.id)
    )
    return [
        InputMessage(
            item_id=row.item_id,
            role=row.role,
            content=row.content,
            parts=row.parts,
            tool_calls=row.tool_calls,
            tool_call_id=row.tool_call_id,
        )
        for row in rows
    ]


async def delete_run(connection: AsyncConnection, *, user_id: str, run_id: str) -> bool:
    """Remove the user's run, its messages and its tool calls (its approvals go with its row). False
    when there is no such run of theirs."""
    owned = await connection.execute(select(Run.id).where(Run.id == run_id, Run.user_id == user_id).with_for_update())
    if owned.one_or_none() is None:
        return False
    await connection.execute(delete(Message).where(Message.user_id == user_id, Message.run_id == run_id))
    await connection.execute(delete(ToolCall).where(ToolCall.user_id == user_id, ToolCall.run_id == run_id))
    await connection.execute(delete(Run).where(Run.id == run_id))
    return True
