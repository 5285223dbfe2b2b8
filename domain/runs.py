"""The life of a run in the database: accepted, claimed, finished or failed.

Both ends of a run are single transactions. Acceptance writes the run and the user's turn together, so
an accepted request is never lost; completion writes the answer and the final state together. Every
write a worker makes is fenced by the attempt its claim started: a worker whose attempt was
superseded (it was thought dead and the run was given to another) writes nothing.

These are Core statements on a plain connection rather than ORM units of work: they run on every
request, and a session's bookkeeping would cost more CPU than the statements themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Row,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import QueryableAttribute, aliased

from domain import admission, conversations
from domain.chat import ChatMessage, ToolCallSpec
from domain.database import InsertOrNothing
from domain.errors import Conflict, RunFailureCode
from domain.events import RunCancelled, RunCompleted, RunFailed, TerminalEvent, Usage
from domain.models import UNFINISHED, Message, Run, utcnow
from domain.run_request import ChatJob, RunRequest
from domain.text import scrub

# Set with every end of a run. A turn outside any conversation (an Open WebUI temporary chat or
# background task) keeps what its model was given (the client's messages) only while it may still
# run: once it has ended, its row says how it went and holds nothing of what was said.
# Set with every end of a run: what its agent had done before a pause is of no more use either.
_FORGET_UNSTORED_INPUT = {
    "spec": case((Run.conversation_id.is_(None), null()), else_=Run.spec),
    "paused_state": null(),
}


# Built once (see `domain.database.InsertOrNothing` for why), executed with each row as parameters.
_NEW_RUN = insert(Run)
_NEW_RUN_ONCE = InsertOrNothing(Run, index_elements=["user_id", "idempotency_key"], returning=Run.id)
_NEW_MESSAGE = insert(Message)


@dataclass(frozen=True, kw_only=True)
class AcceptedTurn:
    run_id: str
    conversation_id: int | None
    conversation_key: str | None
    created_at: datetime
    # Runs of the conversation this turn interrupts (policy `interrupt`), to be told to stop.
    interrupted: tuple[Row[Any], ...] = ()


def storable_text(text: str) -> str:
    """Model output is stored as it came, except what no database accepts: NUL, unpaired surrogates."""
    return scrub(text)


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
        "parts": _stored_parts(message),
        "created_at": utcnow(),
    }


def _stored_parts(message: ChatMessage) -> list[dict[str, Any]] | None:
    """A message with images, audio or files: every part, as the client sent it, for the next turns."""
    if not isinstance(message.content, list) or not message.media_parts:
        return None
    return [part.model_dump(mode="json", exclude_none=True) for part in message.content]


async def accept(
    connection: AsyncConnection,
    request: RunRequest,
    *,
    idempotency: admission.IdempotencyKey | None = None,
    max_active_runs: int | None = None,
    queue_full: bool = False,
) -> AcceptedTurn:
    """Record the run and the new turn. A request without a conversation key is a turn that is not stored.

    With `idempotency`, a run this user started with the same key (and the same request) is the answer
    instead, and nothing is written: its `run_id` is not the request's. Otherwise a full queue, or a
    user with `max_active_runs` runs queued or running, is refused (`Overloaded`) before anything is
    written. The cap is counted in this transaction, so requests racing each other may pass it together.
    Should a concurrent request record a run under the same key first, `admission.KeyTaken` is raised:
    roll back and accept again, which then finds that run.
    """
    conversation_key = request.conversation_key
    new_messages = request.new_messages
    run_id = request.run_id
    user_id = request.user_id
    if idempotency is not None:
        earlier = await admission.earlier_run(connection, user_id=user_id, idempotency=idempotency)
        if earlier is not None:
            return AcceptedTurn(
                run_id=earlier.run_id,
                conversation_id=earlier.conversation_id,
                conversation_key=earlier.conversation_key,
                created_at=earlier.created_at,
            )
    if queue_full:
        raise admission.QueueFull()
    if max_active_runs is not None:
        await admission.check_active_runs(connection, user_id=user_id, limit=max_active_runs)
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
    interrupted: tuple[Row[Any], ...] = ()
    if conversation_id is not None and request.conversation_policy != "enqueue":
        interrupted = await _make_way(connection, request, conversation_id)
    created_at = utcnow()
    run = {
        "id": run_id,
        "user_id": user_id,
        "conversation_id": conversation_id,
        "assistant": request.assistant,
        "status": "queued",
        "attempt": 0,
        "request_id": request.request_id,
        "spec": request.stored_input(),
        "created_at": created_at,
    }
    if idempotency is None:
        await connection.execute(_NEW_RUN, run)
    else:
        created = await connection.execute(
            _NEW_RUN_ONCE.on(connection),
            {**run, "idempotency_key": idempotency.key, "request_hash": idempotency.request_hash},
        )
        if created.scalar_one_or_none() is None:
            raise admission.KeyTaken()
    if conversation_id is not None and new_messages:
        await connection.execute(
            _NEW_MESSAGE,
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
    return AcceptedTurn(
        run_id=run_id,
        conversation_id=conversation_id,
        conversation_key=conversation_key,
        created_at=created_at,
        interrupted=interrupted,
    )


async def _make_way(connection: AsyncConnection, request: RunRequest, conversation_id: int) -> tuple[Row[Any], ...]:
    """Apply a `reject` or `interrupt` policy to the conversation's turns still queued or running."""
    result = await connection.execute(
        select(Run.id).where(Run.conversation_id == conversation_id, Run.status.in_(UNFINISHED))
    )
    busy = [row.id for row in result]
    if not busy:
        return ()
    if request.conversation_policy == "reject":
        raise Conflict(
            "this conversation has a turn in progress: wait for it, cancel it, "
            "or send X-Conversation-Policy: interrupt",
            code="conversation_busy",
        )
    stopped = [await request_cancel(connection, run_id=run_id, user_id=request.user_id) for run_id in busy]
    return tuple(row for row in stopped if row is not None)


async def load(connection: AsyncConnection, run_id: str) -> Row[Any] | None:
    result = await connection.execute(
        select(
            Run.id,
            Run.status,
            Run.attempt,
            Run.error_code,
            Run.error,
            Run.usage,
            Run.lease_expires_at,
            Run.cancel_requested_at,
            Run.attempts_before_pause,
        ).where(Run.id == run_id)
    )
    return result.one_or_none()


async def claim(connection: AsyncConnection, *, run_id: str, lease_s: float, max_attempts: int) -> ChatJob | None:
    """Start the run's next attempt, holding its lease: None unless the run is queued, or running
    under a lease that lapsed (its worker is gone), and has attempts left."""
    now = utcnow()
    result = await connection.execute(
        _CLAIM,
        {"run_id": run_id, "max_attempts": max_attempts, "now": now, "lease_until": now + timedelta(seconds=lease_s)},
    )
    row = result.one_or_none()
    if row is None:
        return None
    # A retry was queued by the reconciler, long after its run's enqueue: it has no queue wait to tell.
    first_attempt = row.attempt == row.attempts_before_pause + 1
    return ChatJob(
        run_id=run_id,
        attempt=row.attempt,
        user_id=row.user_id,
        assistant=row.assistant,
        request_id=row.request_id or "",
        conversation_id=row.conversation_id,
        paused_state=row.paused_state,
        queued_at=_aware(row.queued_at) if first_attempt else None,
        **(row.spec or {}),
    )


def earlier_turn_unfinished() -> ColumnElement[bool]:
    """Whether an earlier turn of the run's conversation is still queued or running: one turn at a
    time per conversation, each seeing the answers before it. Runs outside a conversation never wait."""
    earlier = aliased(Run)
    return (
        select(earlier.id)
        .where(
            earlier.conversation_id == Run.conversation_id,
            _literally_unfinished(earlier.status),
            or_(earlier.created_at < Run.created_at, and_(earlier.created_at == Run.created_at, earlier.id < Run.id)),
        )
        .exists()
    )


def _literally_unfinished(status: QueryableAttribute[str]) -> ColumnElement[bool]:
    """`status IN ('queued', 'running')` written out, not bound: only a condition with these very
    constants lets PostgreSQL use the indexes that hold unfinished runs alone, which stay small however
    many runs have finished. With bound values it scans every run there ever was."""
    return status.in_([literal_column(f"'{value}'") for value in UNFINISHED])


# Built once (see `domain.database.InsertOrNothing` for why): every run is claimed through it.
_NOW = bindparam("now", type_=Run.__table__.c.started_at.type)
_CLAIM = (
    update(Run)
    .where(
        Run.id == bindparam("run_id"),
        # A run that waited for a person gets its retries afresh when it goes on.
        Run.attempt - Run.attempts_before_pause < bindparam("max_attempts", type_=Integer),
        Run.cancel_requested_at.is_(None),
        ~earlier_turn_unfinished(),
        or_(Run.status == "queued", and_(Run.status == "running", Run.lease_expires_at < _NOW)),
    )
    .values(
        status="running",
        attempt=Run.attempt + 1,
        started_at=func.coalesce(Run.started_at, _NOW),
        lease_expires_at=bindparam("lease_until", type_=Run.__table__.c.lease_expires_at.type),
    )
    .returning(
        Run.attempt,
        Run.user_id,
        Run.assistant,
        Run.request_id,
        Run.conversation_id,
        Run.spec,
        Run.paused_state,
        Run.attempts_before_pause,
        func.coalesce(Run.resumed_at, Run.created_at).label("queued_at"),
    )
)

_NEXT_TURN = (
    select(Run.id)
    .where(
        Run.conversation_id == bindparam("conversation_id"),
        _literally_unfinished(Run.status),
        Run.status == literal_column("'queued'"),
    )
    .order_by(Run.created_at, Run.id)
    .limit(1)
)


async def next_turn(connection: AsyncConnection, *, conversation_id: int) -> str | None:
    """The conversation's oldest queued turn, whose wait may just have ended."""
    result = await connection.execute(_NEXT_TURN, {"conversation_id": conversation_id})
    return result.scalar_one_or_none()


def _current(run_id: str, attempt: int) -> ColumnElement[bool]:
    """The fence: the run is running in this attempt, so a superseded attempt writes nothing."""
    return and_(Run.id == run_id, Run.attempt == attempt, Run.status == "running")


async def hold(connection: AsyncConnection, *, run_id: str, attempt: int, lease_s: float) -> bool:
    """Check the attempt is still current, renewing its lease, in the caller's transaction.

    Run first in a transaction whose other writes belong to the attempt (a tool call and its effect):
    on PostgreSQL the row stays locked until commit, so no new attempt can start in between.
    """
    result = await connection.execute(
        update(Run).where(_current(run_id, attempt)).values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
    )
    return bool(result.rowcount)


@dataclass(frozen=True, kw_only=True)
class Renewed:
    current: set[str]
    # Of those, the runs someone asked to stop: delivered here too, should the quick signal be lost.
    cancel_requested: set[str]


async def renew_leases(connection: AsyncConnection, *, attempts: Sequence[tuple[str, int]], lease_s: float) -> Renewed:
    """Renew the leases of a worker's running attempts: which are still current, and which to stop."""
    if not attempts:
        return Renewed(current=set(), cancel_requested=set())
    result = await connection.execute(
        update(Run)
        .where(tuple_(Run.id, Run.attempt).in_(attempts), Run.status == "running")
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
        .returning(Run.id, Run.cancel_requested_at)
    )
    rows = result.all()
    return Renewed(
        current={row.id for row in rows},
        cancel_requested={row.id for row in rows if row.cancel_requested_at is not None},
    )


async def request_cancel(connection: AsyncConnection, *, run_id: str, user_id: str) -> Row[Any] | None:
    """Record that the run's owner asked to stop it. A queued run, or one awaiting approval, is
    cancelled at once and never goes on; a running one is marked, for its worker to stop; a finished
    one is left as it is.
    None when the run is not this user's (or does not exist)."""
    now = utcnow()
    mine = and_(Run.id == run_id, Run.user_id == user_id)
    await connection.execute(
        update(Run)
        .where(mine, Run.status.in_(("queued", "awaiting_approval")))
        .values(
            status="cancelled",
            cancel_requested_at=now,
            finished_at=now,
            lease_expires_at=None,
            **_FORGET_UNSTORED_INPUT,
        )
    )
    await connection.execute(
        update(Run)
        .where(mine, Run.status == "running", Run.cancel_requested_at.is_(None))
        .values(cancel_requested_at=now)
    )
    result = await connection.execute(select(Run.id).where(mine))
    if result.one_or_none() is None:
        return None
    return await load(connection, run_id)


async def cancel(connection: AsyncConnection, *, job: ChatJob, partial: ChatMessage | None, usage: Usage) -> bool:
    """Close the run as cancelled, keeping its partial answer; fenced by the attempt like `finish`."""
    result = await connection.execute(
        update(Run)
        .where(_current(job.run_id, job.attempt))
        .values(
            status="cancelled",
            usage=usage.model_dump(),
            finished_at=utcnow(),
            lease_expires_at=None,
            **_FORGET_UNSTORED_INPUT,
        )
    )
    if not result.rowcount:
        return False
    if job.conversation_id is not None and partial is not None and (partial.text or partial.tool_calls):
        await _store_answer(connection, job, partial)
    return True


async def cancel_abandoned(connection: AsyncConnection, *, run_id: str, attempt: int) -> bool:
    """Cancel a run whose owner asked it to stop and whose worker is gone (its lease lapsed)."""
    result = await connection.execute(
        update(Run)
        .where(Run.id == run_id, Run.attempt == attempt, Run.status == "running", Run.cancel_requested_at.is_not(None))
        .values(status="cancelled", finished_at=utcnow(), lease_expires_at=None, **_FORGET_UNSTORED_INPUT)
    )
    return bool(result.rowcount)


async def finish(
    connection: AsyncConnection,
    *,
    job: ChatJob,
    reply: ChatMessage | None,
    usage: Usage,
) -> bool:
    """Store the answer and close the run. Returns False, writing nothing, unless the attempt is current."""
    result = await connection.execute(
        _FINISH,
        {"p_run_id": job.run_id, "p_attempt": job.attempt, "p_usage": usage.model_dump(), "p_finished_at": utcnow()},
    )
    if not result.rowcount:
        return False
    if job.conversation_id is not None and reply is not None:
        await _store_answer(connection, job, reply)
    return True


_FINISH = (
    update(Run)
    .where(Run.id == bindparam("p_run_id"), Run.attempt == bindparam("p_attempt"), Run.status == "running")
    .values(
        status="succeeded",
        usage=bindparam("p_usage", type_=Run.__table__.c.usage.type),
        finished_at=bindparam("p_finished_at", type_=Run.__table__.c.finished_at.type),
        lease_expires_at=None,
        **_FORGET_UNSTORED_INPUT,
    )
)
# Write-once by item id: the ChatKit surface may save the same answer under the same id.
_ANSWER = InsertOrNothing(Message, index_elements=["item_id"])


async def _store_answer(connection: AsyncConnection, job: ChatJob, reply: ChatMessage) -> None:
    assert job.conversation_id is not None
    await connection.execute(
        _ANSWER.on(connection),
        message_values(
            item_id=f"{job.run_id}-out",
            user_id=job.user_id,
            conversation_id=job.conversation_id,
            run_id=job.run_id,
            message=reply,
        ),
    )


async def fail(connection: AsyncConnection, *, run_id: str, attempt: int, code: RunFailureCode, message: str) -> bool:
    """Close the run as failed, if it is still unfinished in `attempt` (0: it never started)."""
    result = await connection.execute(
        update(Run)
        .where(Run.id == run_id, Run.attempt == attempt, Run.status.in_(UNFINISHED))
        # A provider's error text is quoted here as it came: whatever it holds, the failure is recorded.
        .values(
            status="failed",
            error_code=code,
            error=scrub(message),
            finished_at=utcnow(),
            lease_expires_at=None,
            **_FORGET_UNSTORED_INPUT,
        )
    )
    return bool(result.rowcount)


def usage_of(run: Row[Any]) -> Usage:
    data: dict[str, Any] = run.usage or {}
    return Usage.model_validate(data)


WORKER_LOST = "the run's worker was lost on every attempt"


def outcome_event(run: Row[Any]) -> TerminalEvent:
    """How a finished run (a row from `load`) ended, as its terminal event, for listeners that missed it."""
    if run.status == "succeeded":
        return RunCompleted(run_id=run.id, attempt=run.attempt, usage=usage_of(run))
    if run.status == "cancelled":
        return RunCancelled(run_id=run.id, attempt=run.attempt)
    code: RunFailureCode = run.error_code or "internal_error"
    return RunFailed(run_id=run.id, attempt=run.attempt, code=code, message=run.error or "the run failed")


@dataclass(frozen=True, kw_only=True)
class StoredOutcome:
    """How a run stands in the database, with its stored answer once it has one."""

    status: str
    attempt: int
    error_code: RunFailureCode | None
    error: str | None
    usage: Usage
    # None when the run stores no answer (a turn outside any conversation) or has none yet.
    answer: ChatMessage | None


async def stored_outcome(connection: AsyncConnection, run_id: str) -> StoredOutcome | None:
    run = await load(connection, run_id)
    if run is None:
        return None
    answer = None
    if run.status in ("succeeded", "cancelled"):
        result = await connection.execute(
            select(Message.content, Message.tool_calls).where(Message.item_id == f"{run_id}-out")
        )
        row = result.one_or_none()
        if row is not None:
            calls = [ToolCallSpec.model_validate(call) for call in row.tool_calls] if row.tool_calls else None
            answer = ChatMessage(role="assistant", content=row.content, tool_calls=calls)
    return StoredOutcome(
        status=run.status,
        attempt=run.attempt,
        error_code=run.error_code,
        error=run.error,
        usage=usage_of(run),
        answer=answer,
    )


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
