"""Runs that waited for approval, going on: enqueued once decided, and followed by the chat that decided.

A chat client knows nothing of approvals: a paused run's answer asks "Reply approve or deny.", and the
next message in the conversation is the answer. `decided_in_chat` applies it before a new turn would
be started: a decision resumes the run, and this request follows it from where it paused, so the
client's answer to "approve" is the rest of the run; any other message denies the calls, and the
request goes on as a turn of its own, after the run (one turn at a time per conversation).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import structlog
from redis.exceptions import RedisError

from api.relay.follow import follow_run
from api.relay.start import StartedRun
from api.state import AppState
from domain import approvals, conversations
from domain.database import unavailable_on_connection_errors
from domain.errors import ServiceUnavailable
from domain.job_codec import CHAT_JOB
from domain.run_request import RunRequest

log = structlog.get_logger("switchboard.api")


async def enqueue_resumed(state: AppState, run_id: str) -> None:
    """Enqueue the run's job. The run is `queued` in its row already, so a job that cannot be
    enqueued now (Redis away, or the paused attempt's job not yet cleared) is enqueued by the
    reconciler within a round: the decision stands either way."""
    try:
        queued = await state.enqueuer.enqueue(CHAT_JOB, job_id=run_id, payload={"run_id": run_id})
    except ServiceUnavailable:
        queued = False
    if not queued:
        log.info("run.resume_deferred", run_id=run_id)


@asynccontextmanager
async def decided_in_chat(
    state: AppState, request: RunRequest, *, stop: anyio.Event | None = None
) -> AsyncIterator[StartedRun | None]:
    """The paused run this turn decided to go on with, followed from its pause; None when the turn is a
    turn of its own (nothing awaits approval, or it denied what did)."""
    said = next((message for message in reversed(request.new_messages) if message.role == "user"), None)
    if request.conversation_key is None or request.new_conversation or said is None:
        yield None
        return
    decision = approvals.decision_in(said.text)
    async with AsyncExitStack() as listening:
        async with unavailable_on_connection_errors(), state.db_engine.connect() as connection:
            conversation = await conversations.get(connection, user_id=request.user_id, key=request.conversation_key)
            paused = (
                await approvals.awaiting_run(connection, conversation_id=conversation.id)
                if conversation is not None
                else None
            )
        if conversation is None or paused is None:
            yield None
            return
        after = 0
        if decision is not None:
            # Listening before the decision is written, so nothing the run says next is missed.
            subscription = await listening.enter_async_context(state.hub.subscribe(paused))
            await subscription.ready()
            after = await _last_seq(state, paused)
        async with unavailable_on_connection_errors(), state.db_engine.begin() as connection:
            decided = await approvals.decide_in_chat(
                connection,
                user_id=request.user_id,
                conversation_id=conversation.id,
                said=said,
                decision=decision,
            )
        if decided is not None and decided.resumed:
            await enqueue_resumed(state, decided.run_id)
        if decision is None or decided is None:
            yield None
            return
        yield StartedRun(
            run_id=decided.run_id,
            conversation_id=conversation.id,
            conversation_key=request.conversation_key,
            created_at=decided.created_at,
            progress=follow_run(state, subscription, stop=stop, from_start=True, after=after),
        )


async def _last_seq(state: AppState, run_id: str) -> int:
    """Where the paused run's events stand: what came after is its going on."""
    try:
        log_ = await state.event_log.read(run_id)
    except (RedisError, OSError):
        return 0
    return log_[-1].seq if log_ else 0
