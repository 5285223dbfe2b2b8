"""Reading runs across users, for operators (`switchboard status`, `switchboard runs`).

Unlike `domain.run_views`, nothing here is scoped to a user: these are an administrator's reads, and
each run carries its owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.models import Conversation, Message, Run, utcnow
from domain.run_views import RUN_STATUSES
from domain.runs import earlier_turn_unfinished


@dataclass(frozen=True, kw_only=True)
class AdminRunView:
    id: str
    user_id: str
    status: str
    assistant: str
    conversation_id: int | None
    conversation_key: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None
    attempt: int
    error_code: str | None
    error: str | None


_SELECT = select(
    Run.id,
    Run.user_id,
    Run.status,
    Run.assistant,
    Run.conversation_id,
    Conversation.key.label("conversation_key"),
    Run.created_at,
    Run.started_at,
    Run.finished_at,
    Run.cancel_requested_at,
    Run.attempt,
    Run.error_code,
    Run.error,
).outerjoin(Conversation, Conversation.id == Run.conversation_id)


def _view(row: Row[*tuple[Any, ...]]) -> AdminRunView:
    return AdminRunView(**row._asdict())


async def get(connection: AsyncConnection, run_id: str) -> AdminRunView | None:
    row = (await connection.execute(_SELECT.where(Run.id == run_id))).one_or_none()
    return None if row is None else _view(row)


async def list_runs(
    connection: AsyncConnection, *, limit: int, user_id: str | None = None, status: str | None = None
) -> list[AdminRunView]:
    """The newest runs first, of every user unless `user_id` is given."""
    query = _SELECT
    if user_id is not None:
        query = query.where(Run.user_id == user_id)
    if status is not None:
        query = query.where(Run.status == status)
    result = await connection.execute(query.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit))
    return [_view(row) for row in result]


async def counts_since(connection: AsyncConnection, *, age_s: float) -> dict[str, int]:
    """How many runs accepted in the last `age_s` seconds stand in each state (every state, zeros too)."""
    since = utcnow() - timedelta(seconds=age_s)
    result = await connection.execute(
        select(Run.status, func.count()).where(Run.created_at >= since).group_by(Run.status)
    )
    counts = dict.fromkeys(RUN_STATUSES, 0)
    counts.update({status: int(count) for status, count in result.tuples()})
    return counts


async def oldest_queued(connection: AsyncConnection) -> AdminRunView | None:
    """The queued run accepted first (served by the partial index on unfinished runs)."""
    query = _SELECT.where(Run.status == "queued").order_by(Run.created_at, Run.id).limit(1)
    row = (await connection.execute(query)).one_or_none()
    return None if row is None else _view(row)


async def waits_for_earlier_turn(connection: AsyncConnection, run_id: str) -> bool:
    """Whether a queued run waits for an earlier turn of its conversation: it has no job until that
    turn ends (the worker that ends it queues the next one), so a missing job is expected."""
    result = await connection.execute(select(Run.id).where(Run.id == run_id, earlier_turn_unfinished()))
    return result.first() is not None


async def later_turn(connection: AsyncConnection, run: AdminRunView) -> str | None:
    """A run of the same conversation accepted after this one, if any."""
    if run.conversation_id is None:
        return None
    result = await connection.execute(
        select(Run.id)
        .where(
            Run.conversation_id == run.conversation_id,
            or_(Run.created_at > run.created_at, and_(Run.created_at == run.created_at, Run.id > run.id)),
        )
        .order_by(Run.created_at.desc())
        .limit(1)
    )
    return result.scalar_one_or_none()


async def has_answer(connection: AsyncConnection, run_id: str) -> bool:
    """Whether the run stored an answer (a cancelled run keeps what it had said)."""
    result = await connection.execute(select(Message.id).where(Message.item_id == f"{run_id}-out"))
    return result.first() is not None


async def stored_input(connection: AsyncConnection, run_id: str) -> dict[str, Any] | None:
    """The model input the run's row keeps (`RunRequest.stored_input`); None once it was forgotten
    (a turn outside any conversation forgets it when it ends)."""
    result = await connection.execute(select(Run.spec).where(Run.id == run_id))
    spec: dict[str, Any] | None = result.scalar_one_or_none()
    return spec
