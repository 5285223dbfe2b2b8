"""Runs that stop before a tool call until their owner says yes or no.

A worker whose agent called `approve` tools pauses the run (`pause`): the run leaves `running` for
`awaiting_approval`, keeps what its agent had done (`paused_state`, in the engine's own form), gives up
its lease, and records each call with a digest of its arguments. The owner decides each call
(`decide`), through whichever surface; once none is pending, the run is `queued` again, for any worker
to claim and go on from where it stopped. A decision names the call id and is bound to the digest the
server recorded, so what runs is exactly what was shown. Undecided calls expire (`expire_due`) and
cancel their run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Row, and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain import tool_calls
from domain.chat import ChatMessage
from domain.errors import Conflict, InvalidRequest, NotFound
from domain.models import Approval, Message, Run, ToolCall, utcnow
from domain.runs import message_values
from domain.tool_policy import PendingApproval

Decision = Literal["approve", "deny"]
DECISIONS: tuple[Decision, ...] = ("approve", "deny")
AWAITING = "awaiting_approval"
# What a person may answer in a chat to decide every pending call of the conversation's run.
_APPROVE_WORDS = ("approve", "approved", "yes", "y", "ok", "/approve")
_DENY_WORDS = ("deny", "denied", "no", "n", "/deny")
_SAID: dict[str, Decision] = {**dict.fromkeys(_APPROVE_WORDS, "approve"), **dict.fromkeys(_DENY_WORDS, "deny")}
MOVED_ON = "The user sent another message instead of deciding."
EXPIRED = "Nobody decided in time."


def decision_in(text: str) -> Decision | None:
    """The decision a chat message states ("approve", "yes", "/approve"; "deny", "no", "/deny"), if it is one."""
    return _SAID.get(text.strip().strip(".!").strip().lower())


def arguments_hash(arguments: dict[str, Any]) -> str:
    """A digest of a call's arguments that does not depend on key order or spacing."""
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class ApprovalView:
    call_id: str
    tool: str
    arguments: dict[str, Any]
    arguments_hash: str
    decision: str | None
    reason: str | None
    created_at: datetime
    expires_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "tool": self.tool,
            "arguments": self.arguments,
            "arguments_hash": self.arguments_hash,
            "expires_at": self.expires_at.isoformat(),
        }


def request_text(calls: Sequence[PendingApproval]) -> str:
    """What a chat shows for a paused run: exactly which tools with which arguments, and how to answer."""
    lines = [
        f"- `{call.tool}` with arguments `{json.dumps(call.arguments, ensure_ascii=False, sort_keys=True)}`"
        for call in calls
    ]
    wants = "this tool" if len(calls) == 1 else "these tools"
    return f"I want to run {wants}:\n" + "\n".join(lines) + "\n\nReply approve or deny."


async def pause(
    connection: AsyncConnection,
    *,
    run_id: str,
    attempt: int,
    user_id: str,
    conversation_id: int | None,
    calls: Sequence[PendingApproval],
    paused_state: dict[str, Any],
    said: ChatMessage | None,
    ttl_s: float,
) -> bool:
    """Stop the run at `calls` until they are decided. Fenced by the attempt: False, writing nothing,
    unless the run is still running in it."""
    now = utcnow()
    result = await connection.execute(
        update(Run)
        .where(Run.id == run_id, Run.attempt == attempt, Run.status == "running")
        .values(status=AWAITING, paused_state=paused_state, lease_expires_at=None)
    )
    if not result.rowcount:
        return False
    await connection.execute(
        insert(Approval),
        [
            {
                "run_id": run_id,
                "user_id": user_id,
                "call_id": call.call_id,
                "tool": call.tool,
                "arguments": call.arguments,
                "arguments_hash": arguments_hash(call.arguments),
                "created_at": now,
                "expires_at": now + timedelta(seconds=ttl_s),
            }
            for call in calls
        ],
    )
    if conversation_id is not None and said is not None:
        await connection.execute(
            insert(Message).values(
                **message_values(
                    item_id=f"{run_id}-pause{attempt}",
                    user_id=user_id,
                    conversation_id=conversation_id,
                    run_id=run_id,
                    message=said,
                )
            )
        )
    return True


def _view(row: Row[Any]) -> ApprovalView:
    return ApprovalView(
        call_id=row.call_id,
        tool=row.tool,
        arguments=row.arguments,
        arguments_hash=row.arguments_hash,
        decision=row.decision,
        reason=row.reason,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


async def pending(connection: AsyncConnection, *, run_id: str) -> list[ApprovalView]:
    """The run's calls still waiting for a decision, in the order they were made."""
    rows = await connection.execute(
        select(Approval).where(Approval.run_id == run_id, Approval.decision.is_(None)).order_by(Approval.id)
    )
    return [_view(row) for row in rows]


async def count_pending(connection: AsyncConnection) -> int:
    """Calls waiting for their owner's decision, over every run."""
    result = await connection.execute(select(func.count()).select_from(Approval).where(Approval.decision.is_(None)))
    return int(result.scalar_one())


async def decided(connection: AsyncConnection, *, run_id: str) -> list[ApprovalView]:
    """Every call of the run that was decided, for the worker that goes on with it."""
    rows = await connection.execute(
        select(Approval).where(Approval.run_id == run_id, Approval.decision.is_not(None)).order_by(Approval.id)
    )
    return [_view(row) for row in rows]


@dataclass(frozen=True, kw_only=True)
class Decided:
    # True when this was the last pending call: the run is queued again and must be enqueued.
    resumed: bool


async def decide(
    connection: AsyncConnection,
    *,
    user_id: str,
    run_id: str,
    call_id: str,
    decision: Decision,
    reason: str | None,
    expected_hash: str | None = None,
) -> Decided:
    """Record the owner's decision on one pending call of their run.

    Another user's run is missing (`NotFound`); a call that is not pending, or a run that does not
    await approval, is a `Conflict`; `expected_hash`, when the client names what it approved, must be
    the digest of the arguments the server recorded.
    """
    run = (
        await connection.execute(select(Run.status).where(Run.id == run_id, Run.user_id == user_id).with_for_update())
    ).one_or_none()
    if run is None:
        raise NotFound(f"run '{run_id}' not found", param="run_id")
    call = (
        await connection.execute(select(Approval).where(Approval.run_id == run_id, Approval.call_id == call_id))
    ).one_or_none()
    if call is None:
        raise NotFound(f"run '{run_id}' has no call '{call_id}' awaiting approval", param="call_id")
    if call.decision is not None or run.status != AWAITING:
        raise Conflict(f"call '{call_id}' was already decided ({call.decision})", code="already_decided")
    if expected_hash is not None and expected_hash != call.arguments_hash:
        raise InvalidRequest(
            "arguments_hash does not match the arguments this call was made with", param="arguments_hash"
        )
    await connection.execute(
        update(Approval)
        .where(Approval.id == call.id, Approval.decision.is_(None))
        .values(decision=decision, reason=reason, decided_at=utcnow())
    )
    return Decided(resumed=await _resume_if_decided(connection, run_id=run_id))


async def decide_all(
    connection: AsyncConnection, *, user_id: str, run_id: str, decision: Decision, reason: str | None
) -> bool:
    """Decide every pending call of the run alike (a chat's "approve" or "deny"). True when it resumed."""
    await connection.execute(
        update(Approval)
        .where(Approval.run_id == run_id, Approval.user_id == user_id, Approval.decision.is_(None))
        .values(decision=decision, reason=reason, decided_at=utcnow())
    )
    return await _resume_if_decided(connection, run_id=run_id)


async def _resume_if_decided(connection: AsyncConnection, *, run_id: str) -> bool:
    undecided = await connection.execute(
        select(func.count()).select_from(Approval).where(Approval.run_id == run_id, Approval.decision.is_(None))
    )
    if undecided.scalar_one():
        return False
    result = await connection.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == AWAITING)
        .values(status="queued", attempts_before_pause=Run.attempt, resumed_at=utcnow())
    )
    return bool(result.rowcount)


async def awaiting_run(connection: AsyncConnection, *, conversation_id: int) -> str | None:
    """The conversation's run that waits for a decision, if any (at most one: a turn waits its turn)."""
    result = await connection.execute(
        select(Run.id).where(Run.conversation_id == conversation_id, Run.status == AWAITING).limit(1)
    )
    return result.scalar_one_or_none()


async def expire_due(connection: AsyncConnection) -> list[tuple[str, int]]:
    """Cancel the runs with a call nobody decided in time, as (run id, attempt); their pending calls
    become `expired`."""
    now = utcnow()
    due = await connection.execute(
        select(Approval.run_id).where(Approval.decision.is_(None), Approval.expires_at < now).distinct()
    )
    run_ids = [row.run_id for row in due]
    if not run_ids:
        return []
    await connection.execute(
        update(Approval)
        .where(Approval.run_id.in_(run_ids), Approval.decision.is_(None))
        .values(decision="expired", reason=EXPIRED, decided_at=now)
    )
    cancelled = await connection.execute(
        update(Run)
        .where(and_(Run.id.in_(run_ids), Run.status == AWAITING))
        .values(status="cancelled", finished_at=now, paused_state=None)
        .returning(Run.id, Run.attempt)
    )
    return [(row.id, row.attempt) for row in cancelled]


@dataclass(frozen=True, kw_only=True)
class ApprovedCall:
    """An approved call, as the worker about to run it finds it: its record, once one was claimed."""

    approval_id: int
    # Set once a worker claimed the call: the record of it, with its result once it is known.
    record_id: int | None
    settled: bool
    result: Any
    is_error: bool


async def approved_call(
    connection: AsyncConnection, *, run_id: str, call_id: str, arguments: dict[str, Any]
) -> ApprovedCall | None:
    """The call's approval, if its owner approved exactly these arguments; None otherwise."""
    row = (
        await connection.execute(
            select(Approval.id, Approval.arguments_hash).where(
                Approval.run_id == run_id, Approval.call_id == call_id, Approval.decision == "approve"
            )
        )
    ).one_or_none()
    if row is None or row.arguments_hash != arguments_hash(arguments):
        return None
    record = (
        await connection.execute(
            select(ToolCall.id, ToolCall.result, ToolCall.is_error).where(
                ToolCall.run_id == run_id, ToolCall.ordinal == _ordinal(row.id)
            )
        )
    ).one_or_none()
    return ApprovedCall(
        approval_id=row.id,
        record_id=record.id if record is not None else None,
        settled=record is not None and record.result is not None,
        result=record.result if record is not None else None,
        is_error=bool(record.is_error) if record is not None else False,
    )


async def claim_approved_call(
    connection: AsyncConnection, *, run_id: str, approval_id: int, call_id: str, tool: str, arguments: dict[str, Any]
) -> int | None:
    """Record, before it runs, that the approved call is being made: the record's id, or None when
    another attempt claimed it first. Committed before the call, so no later attempt makes it again."""
    run = (await connection.execute(select(Run.user_id, Run.conversation_id).where(Run.id == run_id))).one()
    return await tool_calls.claim(
        connection,
        user_id=run.user_id,
        conversation_id=run.conversation_id,
        run_id=run_id,
        ordinal=_ordinal(approval_id),
        call_id=call_id,
        tool_name=tool[:64],
        arguments=arguments,
    )


def _ordinal(approval_id: int) -> int:
    # Approved calls are recorded under negative ordinals, one per approval, apart from the
    # positive ordinals of the todo tools' calls: the unique (run, ordinal) lets one attempt claim it.
    return -approval_id


@dataclass(frozen=True, kw_only=True)
class ChatDecision:
    run_id: str
    created_at: datetime
    # True when the run is queued again and must be enqueued.
    resumed: bool


async def decide_in_chat(
    connection: AsyncConnection,
    *,
    user_id: str,
    conversation_id: int,
    said: ChatMessage,
    decision: Decision | None,
) -> ChatDecision | None:
    """A chat message sent while the conversation's run awaits approval decides every call it waits
    for: "approve" or "deny" as said (the message is kept in the history, beside the request), and any
    other message denies them, to be answered as a turn of its own once the run has gone on. None when
    no run of the conversation awaits approval."""
    row = (
        await connection.execute(
            select(Run.id, Run.attempt, Run.created_at)
            .where(Run.conversation_id == conversation_id, Run.user_id == user_id, Run.status == AWAITING)
            .with_for_update()
            .limit(1)
        )
    ).one_or_none()
    if row is None:
        return None
    if decision is None:
        resumed = await decide_all(connection, user_id=user_id, run_id=row.id, decision="deny", reason=MOVED_ON)
        return ChatDecision(run_id=row.id, created_at=row.created_at, resumed=resumed)
    resumed = await decide_all(connection, user_id=user_id, run_id=row.id, decision=decision, reason="said in the chat")
    await connection.execute(
        insert(Message).values(
            **message_values(
                item_id=f"{row.id}-decision{row.attempt}",
                user_id=user_id,
                conversation_id=conversation_id,
                run_id=row.id,
                message=said,
            )
        )
    )
    return ChatDecision(run_id=row.id, created_at=row.created_at, resumed=resumed)
