"""Reading runs back for their user: one run, or a page of them, newest first.

Another user's run is exactly as missing as one that never existed. A run names its conversation by
the key clients know, never by the row id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, get_args

from sqlalchemy import Row, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.database import unavailable_on_connection_errors
from domain.errors import InvalidRequest, NotFound
from domain.models import Conversation, Run, RunStatus

RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)

# Where a run stands in a listing: its (created_at, id).
RunPosition = tuple[datetime, str]


@dataclass(frozen=True, kw_only=True)
class RunView:
    id: str
    status: str
    assistant: str
    conversation_key: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempt: int
    error_code: str | None
    error: str | None
    usage: dict[str, Any] | None

    @property
    def position(self) -> RunPosition:
        return self.created_at, self.id


def parse_status(raw: str | None) -> str | None:
    if raw is None or raw == "":
        return None
    if raw not in RUN_STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(RUN_STATUSES)}", param="status")
    return raw


# The columns of a run as its user sees it, its conversation named by key.
_SELECT = select(
    Run.id,
    Run.status,
    Run.assistant,
    Conversation.key.label("conversation_key"),
    Run.created_at,
    Run.started_at,
    Run.finished_at,
    Run.attempt,
    Run.error_code,
    Run.error,
    Run.usage,
).outerjoin(Conversation, Conversation.id == Run.conversation_id)


def _view(row: Row[*tuple[Any, ...]]) -> RunView:
    return RunView(**row._asdict())


async def get(connection: AsyncConnection, *, user_id: str, run_id: str) -> RunView | None:
    result = await connection.execute(_SELECT.where(Run.user_id == user_id, Run.id == run_id))
    row = result.one_or_none()
    return None if row is None else _view(row)


def _run_id_of(public_id: str, *, prefix: str) -> str | None:
    """The run id behind `<prefix><24 hex>`, as a response or a completion is named after its run;
    None for an id of any other shape, which can name no run."""
    matched = re.match(rf"^{re.escape(prefix)}([0-9a-f]{{24}})$", public_id)
    return None if matched is None else "run_" + matched.group(1)


async def find_by_public_id(
    engine: AsyncEngine, public_id: str, *, prefix: str, user_id: str, kind: str, param: str
) -> RunView:
    """The user's run that `public_id` (`<prefix><24 hex>`, a response or a completion) names.

    An id of another shape, another user's run and one that never existed all raise the same
    `NotFound`, so that no caller can tell whether someone else's id exists; the first never reaches
    the database.
    """
    run_id = _run_id_of(public_id, prefix=prefix)
    run = None
    if run_id is not None:
        async with unavailable_on_connection_errors(), engine.connect() as connection:
            run = await get(connection, user_id=user_id, run_id=run_id)
    if run is None:
        raise NotFound(f"No {kind} found with id '{public_id}'", param=param)
    return run


async def list_page(
    connection: AsyncConnection,
    *,
    user_id: str,
    limit: int,
    conversation_key: str | None = None,
    status: str | None = None,
    after: RunPosition | None = None,
) -> list[RunView]:
    """The user's runs in (created_at, id) order, newest first, past `after`, the last one already seen.

    Served by `ix_runs_user_created` (user_id, created_at); the filters narrow what it yields.
    """
    query = _SELECT.where(Run.user_id == user_id)
    if conversation_key is not None:
        query = query.where(Conversation.key == conversation_key, Conversation.user_id == user_id)
    if status is not None:
        query = query.where(Run.status == status)
    if after is not None:
        created_at, run_id = after
        query = query.where(
            or_(Run.created_at < created_at, and_(Run.created_at == created_at, Run.id < run_id)),
        )
    result = await connection.execute(query.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit))
    return [_view(row) for row in result]


def unix_seconds(moment: datetime | None) -> int | None:
    """Seconds since the epoch, as OpenAI's objects give times; SQLite hands back naive UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())
