"""The one job: run an assistant for an accepted turn, stream its events, persist its outcome.

This is where a run's fate is decided, once: it succeeds, it fails with an error the client is told
about, or (when the worker is cancelled) arq retries it. Failures are logged here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from redis.exceptions import RedisError
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from domain import approvals, conversations, runs, tracing
from domain.chat import ChatMessage, ToolCallSpec
from domain.database import unavailable_on_connection_errors
from domain.errors import RunFailure, ServiceUnavailable
from domain.events import (
    ApprovalRequest,
    RunAwaitingApproval,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
    TerminalEvent,
    Usage,
)
from domain.job_codec import CHAT_JOB, TRACE_CONTEXT
from domain.metrics import RunEnding
from domain.models import UNFINISHED, utcnow
from domain.run_request import CallDecision, ChatJob
from domain.runs import WORKER_LOST, outcome_event
from domain.text import scrub
from workers.agent_runner import RunOutcome
from workers.context import DEPS_KEY, WorkerDeps
from workers.provider_errors import ProviderFailure, provider_errors
from workers.publisher import RunPublisher
from workers.requeue import requeue

log = structlog.get_logger("switchboard.worker")

# Failures that say the model's provider could not be reached or did not answer in time, as against
# one that answered with a refusal.
_PROVIDER_UNREACHABLE = frozenset({"provider_error", "provider_timeout"})


async def run_chat(ctx: dict[str, Any], payload: dict[str, Any]) -> str:
    deps: WorkerDeps = ctx[DEPS_KEY]
    run_id = str(payload["run_id"])
    structlog.contextvars.bind_contextvars(run_id=run_id)
    try:
        if not tracing.enabled():
            return await _run(deps, run_id)
        # A child of the API's enqueue span, in the request's trace, when the job carries its context.
        with tracing.job_span(CHAT_JOB, payload.get(TRACE_CONTEXT), attributes={"switchboard.run_id": run_id}):
            return await _run(deps, run_id)
    finally:
        structlog.contextvars.clear_contextvars()


@dataclass(frozen=True, kw_only=True)
class _Claimed:
    job: ChatJob
    history: list[ChatMessage]


async def _run(deps: WorkerDeps, run_id: str) -> str:
    try:
        claimed = await _claim(deps, run_id)
        if claimed is None:
            return await _not_ours(deps, run_id)
    except ServiceUnavailable:
        # Nothing was started; the run stays queued and the reconciler queues it again once the
        # database is back. One line, not a traceback: the worker reports the outage itself.
        deps.metrics.dependency_errors.labels("database").inc()
        log.warning("run.not_claimed", reason="the database is unreachable")
        return "deferred"
    job = claimed.job
    structlog.contextvars.bind_contextvars(request_id=job.request_id, attempt=job.attempt)
    tracing.tag_run(request_id=job.request_id, assistant=job.assistant, attempt=job.attempt)
    metrics = deps.metrics
    started_s = time.monotonic()
    metrics.run_started(assistant=job.assistant)
    if job.queued_at is not None:
        metrics.queue_wait_s.observe(max(0.0, (utcnow() - job.queued_at).total_seconds()))
    publisher = RunPublisher(
        deps.events,
        run_id=run_id,
        attempt=job.attempt,
        pacing=deps.text_pacing,
        metrics=metrics,
    )
    ending: RunEnding = "interrupted"
    deps.leases.hold(run_id, job.attempt)
    # The agent runs in a task of its own, so a cancel can stop it (its model stream, its tool call in
    # flight) while this job lives on to store what it said.
    agent = asyncio.create_task(_run_agent(deps, job, claimed.history, publisher))
    deps.cancels.track(run_id, agent)
    try:
        # Announced while the model is being asked, not before it.
        await publisher.emit(RunStarted(run_id=run_id, attempt=job.attempt))
        log.info("run.started", assistant=job.assistant, history_messages=len(claimed.history))
        try:
            outcome = await asyncio.shield(agent)
        except RunFailure as exc:
            if exc.code in _PROVIDER_UNREACHABLE:
                metrics.dependency_errors.labels("llm").inc()
            ending = await _fail(deps, publisher, exc, conversation_id=job.conversation_id)
            return ending
        except asyncio.CancelledError:
            if agent.cancelled() and deps.cancels.asked(run_id):
                ending = await _cancelled(deps, publisher, job)
                return ending
            # The worker itself is stopping: another attempt takes the run over once its lease lapses.
            agent.cancel()
            log.warning("run.interrupted", note="another attempt takes it over once its lease lapses")
            raise
        except Exception as exc:
            failure = RunFailure("the run failed unexpectedly", code="internal_error")
            failure.__cause__ = exc
            ending = await _fail(deps, publisher, failure, conversation_id=job.conversation_id)
            return ending
        metrics.tokens(input_tokens=outcome.usage.prompt_tokens, output_tokens=outcome.usage.completion_tokens)
        if outcome.pending_approvals:
            ending = await _pause(deps, publisher, job, outcome)
        else:
            ending = await _succeed(deps, publisher, job, outcome)
        return ending
    finally:
        metrics.run_finished(assistant=job.assistant, ending=ending, duration_s=time.monotonic() - started_s)
        publisher.close()
        deps.cancels.forget(run_id)
        deps.leases.release(run_id)


async def _claim(deps: WorkerDeps, run_id: str) -> _Claimed | None:
    """The run's next attempt, now ours, with the history its model is given; None if not ours to run.

    Each statement commits on its own: the claim is one atomic UPDATE, and what is read after it was
    committed before the run was queued. No BEGIN and COMMIT is two round trips fewer before the model
    is asked. Should the database go away between the claim and the reads, the claimed attempt's lease
    lapses and the reconciler gives the run another.
    """
    settings = deps.settings
    async with unavailable_on_connection_errors(), deps.db_engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        job = await runs.claim(
            connection, run_id=run_id, lease_s=settings.run_lease_s, max_attempts=settings.run_max_attempts
        )
        if job is None:
            return None
        if job.paused_state is not None:
            decided = await approvals.decided(connection, run_id=run_id)
            job = job.model_copy(
                update={
                    "decisions": [
                        CallDecision(call_id=view.call_id, approved=view.decision == "approve", reason=view.reason)
                        for view in decided
                    ]
                }
            )
        if job.history is not None:
            return _Claimed(job=job, history=job.history)
        window = await _stored_window(connection, job, settings.history_window)
        return _Claimed(job=job, history=job.system_messages + window)


async def _run_agent(deps: WorkerDeps, job: ChatJob, history: list[ChatMessage], publisher: RunPublisher) -> RunOutcome:
    timeout_s = deps.settings.run_timeout_s
    runner = deps.runners.get(job.assistant)
    if runner is None:
        # The API knows an assistant this worker does not: they were started with different assistants files.
        raise RunFailure(f"this worker has no assistant '{job.assistant}'", code="internal_error")
    try:
        async with asyncio.timeout(timeout_s):
            with provider_errors():
                return await runner.run(job, history, publisher)
    except TimeoutError as exc:
        raise RunFailure(f"the run took longer than {timeout_s:g} s", code="run_timeout") from exc


async def _not_ours(deps: WorkerDeps, run_id: str) -> str:
    """The run is finished, missing, carried by a live attempt elsewhere, or out of attempts."""
    async with unavailable_on_connection_errors(), deps.db_engine.begin() as connection:
        run = await runs.load(connection, run_id)
        if run is None:
            log.warning("run.missing")
            return "missing"
        attempts_used = run.attempt - run.attempts_before_pause
        if run.status in UNFINISHED and attempts_used >= deps.settings.run_max_attempts and _lapsed(run):
            await runs.fail(connection, run_id=run_id, attempt=run.attempt, code="worker_lost", message=WORKER_LOST)
            run = await runs.load(connection, run_id)
            assert run is not None
    if run.status in UNFINISHED:
        log.info("run.held_elsewhere", attempt=run.attempt)
        return "held"
    # A duplicate delivery of a finished run: say again how it ended, so a listener is not left hanging.
    await _announce_outcome(deps, run)
    return "duplicate"


def _lapsed(run: Row[Any]) -> bool:
    return run.status == "queued" or run.lease_expires_at is None or run.lease_expires_at < utcnow()


async def _announce_outcome(deps: WorkerDeps, run: Row[Any]) -> None:
    event = outcome_event(run)
    with contextlib.suppress(RedisError, OSError):
        await deps.events.deliver(event)


async def _stored_window(connection: AsyncConnection, job: ChatJob, window: int) -> list[ChatMessage]:
    if job.conversation_id is None:
        return []
    rows = await conversations.recent_messages(
        connection, user_id=job.user_id, conversation_id=job.conversation_id, limit=window, up_to_run=job.run_id
    )
    return [_as_chat_message(row) for row in rows]


def _as_chat_message(row: Row[Any]) -> ChatMessage:
    calls = [ToolCallSpec.model_validate(call) for call in row.tool_calls] if row.tool_calls else None
    # A message with media kept all its parts; `content` is only their text.
    content = row.parts or row.content
    return ChatMessage(role=row.role, content=content, tool_calls=calls, tool_call_id=row.tool_call_id)


async def _succeed(deps: WorkerDeps, publisher: RunPublisher, job: ChatJob, outcome: RunOutcome) -> RunEnding:
    publisher.flush()

    async def store(connection: AsyncConnection) -> bool:
        return await runs.finish(connection, job=job, reply=outcome.as_message(), usage=outcome.usage)

    stored = await _write_outcome(deps, store, conversation_id=job.conversation_id)
    if stored:
        await _publish_end(
            publisher,
            RunCompleted(
                run_id=job.run_id,
                attempt=job.attempt,
                finish_reason=outcome.finish_reason,
                usage=outcome.usage,
                logprobs=outcome.logprobs,
            ),
        )
    log.info("run.completed", finish_reason=outcome.finish_reason, stored=stored, **outcome.usage.model_dump())
    return "succeeded" if stored else "superseded"


async def _pause(deps: WorkerDeps, publisher: RunPublisher, job: ChatJob, outcome: RunOutcome) -> RunEnding:
    """Stop before the calls that need approval; the run goes on, on any worker, once they are decided."""
    publisher.flush()
    if outcome.paused_state is None:
        raise AssertionError("a runner that stops for approval says where it stopped")
    paused_state = outcome.paused_state

    async def store(connection: AsyncConnection) -> bool:
        return await approvals.pause(
            connection,
            run_id=job.run_id,
            attempt=job.attempt,
            user_id=job.user_id,
            conversation_id=job.conversation_id,
            calls=outcome.pending_approvals,
            paused_state=paused_state,
            said=outcome.as_message() if outcome.text else None,
            ttl_s=deps.settings.approval_ttl_s,
        )

    if await _write_outcome(deps, store, conversation_id=job.conversation_id):
        asked = [
            ApprovalRequest(
                call_id=call.call_id,
                tool=call.tool,
                arguments=call.arguments,
                arguments_hash=approvals.arguments_hash(call.arguments),
            )
            for call in outcome.pending_approvals
        ]
        await _publish_end(publisher, RunAwaitingApproval(run_id=job.run_id, attempt=job.attempt, approvals=asked))
    log.info("run.awaiting_approval", calls=len(outcome.pending_approvals))
    return "awaiting_approval"


async def _fail(
    deps: WorkerDeps, publisher: RunPublisher, failure: RunFailure, *, conversation_id: int | None
) -> RunEnding:
    details = {}
    if isinstance(failure, ProviderFailure):
        details = {"provider_status": failure.status, "provider_body": failure.body}
    if failure.code == "internal_error":
        log.error("run.crashed", error=failure.message, exc_info=failure.__cause__)
    else:
        log.warning("run.failed", code=failure.code, error=failure.message, cause=repr(failure.__cause__), **details)
    publisher.flush()
    run_id, attempt = publisher.run_id, publisher.attempt

    async def store(connection: AsyncConnection) -> bool:
        return await runs.fail(connection, run_id=run_id, attempt=attempt, code=failure.code, message=failure.message)

    if await _write_outcome(deps, store, conversation_id=conversation_id):
        await _publish_end(
            publisher, RunFailed(run_id=run_id, attempt=attempt, code=failure.code, message=failure.message)
        )
    return "failed"


async def _cancelled(deps: WorkerDeps, publisher: RunPublisher, job: ChatJob) -> RunEnding:
    """Its owner stopped the run: what it said until then is stored as its answer."""
    publisher.flush()
    partial = ChatMessage(role="assistant", content=scrub(publisher.text_sent()))

    async def store(connection: AsyncConnection) -> bool:
        return await runs.cancel(connection, job=job, partial=partial, usage=Usage())

    if await _write_outcome(deps, store, conversation_id=job.conversation_id):
        await _publish_end(publisher, RunCancelled(run_id=job.run_id, attempt=job.attempt))
    log.info("run.cancelled", partial_chars=len(partial.text))
    return "cancelled"


async def _write_outcome(
    deps: WorkerDeps, store: Callable[[AsyncConnection], Awaitable[bool]], *, conversation_id: int | None
) -> bool:
    """Write the run's outcome, retrying while the database is away, for as long as the run's time allows.

    The outcome is kept in memory meanwhile. Should this worker die first, the run's lease lapses and
    the reconciler gives it a new attempt. False when the attempt was superseded and nothing was written.
    Once it is written, the conversation's next turn, which waited for this one, is queued.
    """
    if tracing.enabled():
        with tracing.tracer().start_as_current_span("write outcome"):
            stored, next_turn = await _write_outcome_now(deps, store, conversation_id=conversation_id)
    else:
        stored, next_turn = await _write_outcome_now(deps, store, conversation_id=conversation_id)
    if next_turn is not None:
        await _queue_next_turn(deps, next_turn)
    return stored


async def _write_outcome_now(
    deps: WorkerDeps, store: Callable[[AsyncConnection], Awaitable[bool]], *, conversation_id: int | None
) -> tuple[bool, str | None]:
    """Whether the outcome was written, and the conversation's next queued turn, read in the same transaction."""
    deadline = asyncio.get_running_loop().time() + deps.settings.run_timeout_s
    delay_s = 0.2
    while True:
        try:
            async with unavailable_on_connection_errors(), deps.db_engine.begin() as connection:
                if not await store(connection):
                    return False, None
                if conversation_id is None:
                    return True, None
                return True, await runs.next_turn(connection, conversation_id=conversation_id)
        except ServiceUnavailable:
            if asyncio.get_running_loop().time() + delay_s > deadline:
                raise
            log.warning("run.outcome_waits_for_database", retry_in_s=delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 5.0)


async def _queue_next_turn(deps: WorkerDeps, run_id: str) -> None:
    """The conversation's next turn waited for this one (one turn at a time): it may go now. Should
    this fail, the reconciler queues it within a round."""
    try:
        await requeue(deps.queue, run_id)
    except (RedisError, OSError) as exc:
        log.info("run.next_turn_not_queued", error=str(exc))


async def _publish_end(publisher: RunPublisher, event: TerminalEvent) -> None:
    # The outcome is stored; a listener that misses this event finds it in the database.
    try:
        await publisher.finish(event)
    except (RedisError, OSError) as exc:
        log.warning("run.end_not_published", error=str(exc))
