"""What a new run must pass before `domain.runs.accept` records it: the per-user cap, and the rules of
the `Idempotency-Key` header.

A client that retries after a network error sends the same key again, and gets the run the first
request started rather than a second turn (and a second bill). Keys belong to a user (the unique
constraint `uq_runs_user_idempotency_key` on the runs table), and the run keeps a digest of the
request that came with its key, so the same key with another request is refused instead of being
answered with a run that does not match it. After `IDEMPOTENCY_WINDOW` a key may be used again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, bindparam, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.errors import InvalidRequest, Overloaded, Unprocessable
from domain.models import Conversation, Run, utcnow

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
IDEMPOTENCY_WINDOW = timedelta(hours=24)
# The same text as the partial index `ix_runs_unfinished_user`'s predicate, as literals: a bound
# parameter would keep PostgreSQL's generic plans from using the index.
_UNFINISHED = text("runs.status IN ('queued', 'running')")


@dataclass(frozen=True, kw_only=True)
class IdempotencyKey:
    """The client's key, and the digest of the request it came with."""

    key: str
    request_hash: str


@dataclass(frozen=True, kw_only=True)
class EarlierRun:
    """The run a key names already: the answer to a retry."""

    run_id: str
    conversation_id: int | None
    conversation_key: str | None
    created_at: datetime


class QueueFull(Overloaded):
    """The queue holds `SWITCHBOARD_MAX_QUEUED_RUNS` runs or more."""

    def __init__(self) -> None:
        super().__init__("too many runs are queued; retry shortly")


class KeyTaken(Exception):
    """A concurrent request with the same key recorded its run first. The transaction must be rolled
    back (it may have made a conversation for nothing) and the request accepted again: the winner's
    run is then found and answers it."""


def parse_key(value: str) -> str:
    """The header's value, if it is a key: 1 to 255 printable ASCII characters."""
    if not value or len(value) > MAX_KEY_LENGTH or not all(" " <= char <= "~" for char in value):
        raise InvalidRequest(
            f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
            param=IDEMPOTENCY_HEADER,
        )
    return value


def request_hash(*, path: str, body: Any, **scope: str | None) -> str:
    """A digest of a request: its path, its JSON body with sorted keys, and whatever else changes what it
    asks for (a conversation named in a header, say)."""
    canonical = json.dumps({"path": path, "body": body, "scope": scope}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def earlier_run(connection: AsyncConnection, *, user_id: str, idempotency: IdempotencyKey) -> EarlierRun | None:
    """The run this user's key already names, if any; `Unprocessable` if it came with another request.

    A key older than the window is freed, and so is the key of a run that failed before any worker
    took it (its job could not be handed over): retrying that request is how a client recovers.
    """
    result = await connection.execute(
        select(
            Run.id,
            Run.request_hash,
            Run.status,
            Run.attempt,
            Run.conversation_id,
            Run.created_at,
            Conversation.key.label("conversation_key"),
            (Run.created_at < utcnow() - IDEMPOTENCY_WINDOW).label("expired"),
        )
        .outerjoin(Conversation, Conversation.id == Run.conversation_id)
        .where(Run.user_id == user_id, Run.idempotency_key == idempotency.key)
    )
    run = result.one_or_none()
    if run is None:
        return None
    if run.expired or (run.status == "failed" and run.attempt == 0):
        await connection.execute(update(Run).where(Run.id == run.id).values(idempotency_key=None))
        return None
    if run.request_hash != idempotency.request_hash:
        raise Unprocessable(
            f"this {IDEMPOTENCY_HEADER} was used with a different request",
            param=IDEMPOTENCY_HEADER,
            code="idempotency_key_reused",
        )
    return EarlierRun(
        run_id=run.id,
        conversation_id=run.conversation_id,
        conversation_key=run.conversation_key,
        created_at=run.created_at,
    )


# Built once: it runs with every turn (see `domain.database.InsertOrNothing` for why).
_ACTIVE_RUNS = select(func.count()).select_from(
    select(Run.id)
    .where(Run.user_id == bindparam("user_id"), _UNFINISHED)
    .limit(bindparam("limit", type_=Integer))
    .subquery()
)


async def check_active_runs(connection: AsyncConnection, *, user_id: str, limit: int) -> None:
    """`Overloaded` if the user has `limit` runs queued or running; reads at most `limit` index entries."""
    count = (await connection.execute(_ACTIVE_RUNS, {"user_id": user_id, "limit": limit})).scalar_one()
    if count >= limit:
        raise Overloaded(
            f"you have {limit} runs queued or running; retry when one has finished", code="too_many_active_runs"
        )
