"""What the reconciler reads and writes: runs that nobody is carrying to their end.

Each query reads only unfinished runs, through the partial indexes on them, so its cost does not
grow with the number of finished runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.models import Run, utcnow
from domain.runs import earlier_turn_unfinished

BATCH = 500


@dataclass(frozen=True, kw_only=True)
class Unfinished:
    id: str
    status: str
    attempt: int
    attempts_before_pause: int
    created_at: datetime

    @property
    def attempts_used(self) -> int:
        """Attempts since it last went on after a pause for approval (a pause gives retries afresh)."""
        return self.attempt - self.attempts_before_pause


async def queued_before(connection: AsyncConnection, *, age_s: float) -> list[Unfinished]:
    """Queued runs accepted more than `age_s` ago: their job should long have been taken."""
    cutoff = utcnow() - timedelta(seconds=age_s)
    # One that waits for an earlier turn of its conversation is queued when that turn ends.
    return await _select(connection, Run.status == "queued", Run.created_at < cutoff, ~earlier_turn_unfinished())


async def lapsed(connection: AsyncConnection) -> list[Unfinished]:
    """Running runs whose lease lapsed: the worker carrying them is gone."""
    return await _select(connection, Run.status == "running", Run.lease_expires_at < utcnow())


async def overdue(connection: AsyncConnection, *, age_s: float) -> list[Unfinished]:
    """Unfinished runs accepted (or resumed after a pause) more than `age_s` ago: past their timeout,
    whatever carries them."""
    cutoff = utcnow() - timedelta(seconds=age_s)
    return await _select(
        connection, Run.status.in_(("queued", "running")), func.coalesce(Run.resumed_at, Run.created_at) < cutoff
    )


async def _select(connection: AsyncConnection, *conditions: object) -> list[Unfinished]:
    result = await connection.execute(
        select(Run.id, Run.status, Run.attempt, Run.attempts_before_pause, Run.created_at)
        .where(*conditions)  # type: ignore[arg-type]
        .order_by(Run.created_at)
        .limit(BATCH)
    )
    return [
        Unfinished(
            id=row.id,
            status=row.status,
            attempt=row.attempt,
            attempts_before_pause=row.attempts_before_pause,
            created_at=row.created_at,
        )
        for row in result
    ]
