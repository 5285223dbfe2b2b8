"""The record of a run's server-side tool calls, which makes them happen once per run.

A call is keyed by (run, ordinal), its position in the run. The record is claimed first, in the same
transaction as the call's effect, and settled with the result before that transaction commits. So a
record exists exactly when the effect happened; and a second attempt of the run that makes the same
call finds the record and gets its result instead of doing it again. Two attempts racing for one
ordinal meet at the unique key: the loser's insert waits for the winner's transaction, then does
nothing, and the loser reads the winner's result.

Claiming is the transaction's first statement on purpose: on SQLite it takes the write lock at once,
rather than upgrading a read transaction later (which fails instead of waiting).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.database import conflict_insert
from domain.models import ToolCall, utcnow

MAX_CALL_ID_CHARS = 255


@dataclass(frozen=True, kw_only=True)
class RecordedCall:
    ordinal: int
    call_id: str | None
    tool_name: str
    arguments: dict[str, Any]
    # The tool's payload, or `{"error": message}` when `is_error`.
    result: Any
    is_error: bool


def recorded_call_id(run_id: str, call_id: str | None, ordinal: int) -> str:
    """The id a recorded call goes by: the model's own, or a stable one made from the run and the call's
    position. The worker names replayed calls by it and the thread view shows calls by it, so both agree."""
    return call_id or f"call_{run_id.removeprefix('run_')}_{ordinal}"


_COLUMNS = (
    ToolCall.ordinal,
    ToolCall.call_id,
    ToolCall.tool_name,
    ToolCall.arguments,
    ToolCall.result,
    ToolCall.is_error,
)


def _recorded(row: Row[Any]) -> RecordedCall:
    return RecordedCall(
        ordinal=row.ordinal,
        call_id=row.call_id,
        tool_name=row.tool_name,
        arguments=dict(row.arguments or {}),
        result=row.result,
        is_error=bool(row.is_error),
    )


async def claim(
    connection: AsyncConnection,
    *,
    user_id: str,
    conversation_id: int | None,
    run_id: str,
    ordinal: int,
    call_id: str | None,
    tool_name: str,
    arguments: Mapping[str, Any],
) -> int | None:
    """Reserve (run, ordinal) for this call: the record's id, or None when an attempt already made it."""
    result = await connection.execute(
        conflict_insert(connection, ToolCall)
        .values(
            user_id=user_id,
            conversation_id=conversation_id,
            run_id=run_id,
            ordinal=ordinal,
            call_id=call_id[:MAX_CALL_ID_CHARS] if call_id else None,
            tool_name=tool_name,
            arguments=dict(arguments),
            result=None,
            is_error=False,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["run_id", "ordinal"])
        .returning(ToolCall.id)
    )
    return result.scalar_one_or_none()


async def settle(connection: AsyncConnection, *, record_id: int, result: Any, is_error: bool) -> None:
    await connection.execute(update(ToolCall).where(ToolCall.id == record_id).values(result=result, is_error=is_error))


async def recorded(connection: AsyncConnection, *, run_id: str, ordinal: int) -> RecordedCall:
    row = (
        await connection.execute(select(*_COLUMNS).where(ToolCall.run_id == run_id, ToolCall.ordinal == ordinal))
    ).one()
    return _recorded(row)


async def for_run(connection: AsyncConnection, *, run_id: str) -> list[RecordedCall]:
    """Every recorded call of the run, in the order they were made."""
    rows = await connection.execute(select(*_COLUMNS).where(ToolCall.run_id == run_id).order_by(ToolCall.ordinal))
    return [_recorded(row) for row in rows.all()]
