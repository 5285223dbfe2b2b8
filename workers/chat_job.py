"""The one job: run an assistant for an accepted turn, stream its events, persist its outcome.

This is where a run's fate is decided, once: it succeeds, it fails with an error the client is told
about, or (when the worker is cancelled) arq retries it. Failures are logged here and nowhere else.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from domain import conversations, runs
from domain.chat import ChatMessage, ToolCallSpec
from domain.errors import RunFailure, RunFailureCode
from domain.events import RunCompleted, RunFailed, RunStarted
from domain.run_request import ChatJob
from domain.runs import ClaimedRun
from workers.agent_runner import RunOutcome
from workers.context import DEPS_KEY, WorkerDeps
from workers.provider_errors import ProviderFailure, provider_errors
from workers.publisher import RunPublisher

log = structlog.get_logger("switchboard.worker")


async def run_chat(ctx: dict[str, Any], payload: dict[str, Any]) -> str:
    deps: WorkerDeps = ctx[DEPS_KEY]
    job = ChatJob.model_validate(payload)
    attempt = int(ctx.get("job_try", 1))
    structlog.contextvars.bind_contextvars(request_id=job.request_id, run_id=job.run_id, attempt=attempt)
    try:
        return await _run(deps, job, attempt)
    finally:
        structlog.contextvars.clear_contextvars()


@dataclass(frozen=True, kw_only=True)
class _Claimed:
    run: ClaimedRun
    history: list[ChatMessage]


async def _run(deps: WorkerDeps, job: ChatJob, attempt: int) -> str:
    claimed = await _claim(deps, job, attempt)
    if not isinstance(claimed, _Claimed):
        return await _not_ours(deps, job, claimed, attempt)
    publisher = RunPublisher(
        deps.events, run_id=job.run_id, attempt=attempt, coalesce_s=deps.settings.delta_coalesce_ms / 1000
    )
    # Announced while the model is being asked, not before it.
    await publisher.emit(RunStarted(run_id=job.run_id, attempt=attempt))
    log.info("run.started", assistant=job.assistant, history_messages=len(claimed.history))
    try:
        outcome = await _run_agent(deps, job, claimed.history, publisher)
    except RunFailure as exc:
        return await _fail(deps, publisher, exc)
    except asyncio.CancelledError:
        log.warning("run.cancelled", note="arq retries it")
        raise
    except Exception as exc:
        failure = RunFailure("the run failed unexpectedly", code="internal_error")
        failure.__cause__ = exc
        return await _fail(deps, publisher, failure)
    return await _succeed(deps, publisher, claimed.run, outcome)


async def _claim(deps: WorkerDeps, job: ChatJob, attempt: int) -> _Claimed | Row[Any] | None:
    """The run, now ours, with the history its model is given; or, if it is not ours to run, its row."""
    async with deps.db_engine.begin() as connection:
        run = await runs.claim(connection, run_id=job.run_id, attempt=attempt)
        if run is None:
            return await runs.load(connection, job.run_id)
        if job.history is not None:
            return _Claimed(run=run, history=job.history)
        window = await _stored_window(connection, run, deps.settings.history_window)
        return _Claimed(run=run, history=job.system_messages + window)


async def _run_agent(deps: WorkerDeps, job: ChatJob, history: list[ChatMessage], publisher: RunPublisher) -> RunOutcome:
    timeout_s = deps.settings.run_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            with provider_errors():
                return await deps.runners[job.assistant].run(job, history, publisher)
    except TimeoutError as exc:
        raise RunFailure(f"the run took longer than {timeout_s:g} s", code="run_timeout") from exc


async def _not_ours(deps: WorkerDeps, job: ChatJob, finished: Row[Any] | None, attempt: int) -> str:
    if finished is None:
        log.warning("run.missing")
        return "missing"
    # A duplicate delivery of a finished run: say again how it ended, so a listener is not left hanging.
    if finished.status == "succeeded":
        event: RunCompleted | RunFailed = RunCompleted(
            run_id=job.run_id, attempt=attempt, usage=runs.usage_of(finished)
        )
    else:
        code: RunFailureCode = finished.error_code or "internal_error"
        event = RunFailed(run_id=job.run_id, attempt=attempt, code=code, message=finished.error or "the run failed")
    await deps.events.deliver(event)
    return "duplicate"


async def _stored_window(connection: AsyncConnection, run: ClaimedRun, window: int) -> list[ChatMessage]:
    if run.conversation_id is None:
        return []
    rows = await conversations.recent_messages(
        connection, user_id=run.user_id, conversation_id=run.conversation_id, limit=window, up_to_run=run.id
    )
    return [_as_chat_message(row) for row in rows]


def _as_chat_message(row: Row[Any]) -> ChatMessage:
    calls = [ToolCallSpec.model_validate(call) for call in row.tool_calls] if row.tool_calls else None
    return ChatMessage(role=row.role, content=row.content, tool_calls=calls, tool_call_id=row.tool_call_id)


async def _succeed(deps: WorkerDeps, publisher: RunPublisher, run: ClaimedRun, outcome: RunOutcome) -> str:
    publisher.flush()
    async with deps.db_engine.begin() as connection:
        stored = await runs.finish(
            connection, run=run, attempt=publisher.attempt, reply=outcome.as_message(), usage=outcome.usage
        )
    await publisher.finish(
        RunCompleted(run_id=run.id, attempt=publisher.attempt, finish_reason=outcome.finish_reason, usage=outcome.usage)
    )
    log.info("run.completed", finish_reason=outcome.finish_reason, stored=stored, **outcome.usage.model_dump())
    return "completed"


async def _fail(deps: WorkerDeps, publisher: RunPublisher, failure: RunFailure) -> str:
    details = (
        {"provider_status": failure.status, "provider_body": failure.body}
        if isinstance(failure, ProviderFailure)
        else {}
    )
    if failure.code == "internal_error":
        log.error("run.crashed", error=failure.message, exc_info=failure.__cause__)
    else:
        log.warning("run.failed", code=failure.code, error=failure.message, cause=repr(failure.__cause__), **details)
    publisher.flush()
    async with deps.db_engine.begin() as connection:
        await runs.fail(
            connection, run_id=publisher.run_id, attempt=publisher.attempt, code=failure.code, message=failure.message
        )
    await publisher.finish(
        RunFailed(run_id=publisher.run_id, attempt=publisher.attempt, code=failure.code, message=failure.message)
    )
    return "failed"
