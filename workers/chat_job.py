"""The one job: run an assistant for an accepted turn, stream its events, persist its outcome.

This is where a run's fate is decided, once: it succeeds, it fails with an error the client is told
about, or (when the worker is cancelled) arq retries it. Failures are logged here and nowhere else.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from pydantic_ai.exceptions import ModelAPIError, ModelHTTPError, ModelTimeoutError, UnexpectedModelBehavior
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from domain import conversations, runs
from domain.chat import ChatJob, ChatMessage, ToolCallSpec
from domain.errors import ProviderError, ProviderTimeout
from domain.events import RunCompleted, RunFailed, RunStarted
from domain.runs import ClaimedRun
from workers.context import DEPS_KEY, WorkerDeps
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


async def _run(deps: WorkerDeps, job: ChatJob, attempt: int) -> str:
    settings = deps.settings
    publisher = RunPublisher(
        deps.events, run_id=job.run_id, attempt=attempt, coalesce_s=settings.delta_coalesce_ms / 1000
    )
    async with deps.db_engine.begin() as connection:
        run = await runs.claim(connection, run_id=job.run_id, attempt=attempt)
        if run is None:
            finished = await runs.load(connection, job.run_id)
        elif job.history is not None:
            history = job.history
        else:
            history = job.system_messages + await _stored_window(connection, run, settings.history_window)
    if run is None:
        if finished is None:
            log.warning("run.missing")
            return "missing"
        # A duplicate delivery of a finished run: say again how it ended, so a listener is not left hanging.
        await _replay_outcome(deps, finished, attempt)
        return "duplicate"

    # Announced while the model is being asked, not before it.
    await publisher.emit(RunStarted(run_id=job.run_id, attempt=attempt))
    log.info("run.started", assistant=job.assistant, history_messages=len(history))
    try:
        async with asyncio.timeout(settings.run_timeout_s):
            outcome = await deps.engines[job.assistant].run(job, history, publisher)
    except TimeoutError:
        return await _fail(deps, publisher, "run_timeout", f"the run took longer than {settings.run_timeout_s:g} s")
    except ModelTimeoutError:
        return await _fail(deps, publisher, "provider_timeout", "the model provider timed out")
    except ModelHTTPError as exc:
        return await _fail(deps, publisher, "provider_error", f"the model provider answered HTTP {exc.status_code}")
    except (ModelAPIError, UnexpectedModelBehavior) as exc:
        return await _fail(deps, publisher, "provider_error", f"the model provider failed: {type(exc).__name__}")
    except (ProviderError, ProviderTimeout) as exc:
        # Engines that do not speak PydanticAI report provider failures as ours.
        return await _fail(deps, publisher, exc.code, exc.message)
    except asyncio.CancelledError:
        log.warning("run.cancelled", note="arq retries it")
        raise
    except Exception:
        log.exception("run.crashed")
        return await _fail(deps, publisher, "internal_error", "the run failed unexpectedly")

    publisher.flush()
    async with deps.db_engine.begin() as connection:
        stored = await runs.finish(
            connection, run=run, attempt=attempt, reply=outcome.as_message(), usage=outcome.usage
        )
    await publisher.finish(
        RunCompleted(run_id=job.run_id, attempt=attempt, finish_reason=outcome.finish_reason, usage=outcome.usage)
    )
    log.info("run.completed", finish_reason=outcome.finish_reason, stored=stored, **outcome.usage.model_dump())
    return "completed"


async def _stored_window(connection: AsyncConnection, run: ClaimedRun, window: int) -> list[ChatMessage]:
    if run.conversation_id is None:
        return []
    rows = await conversations.recent_messages(
        connection, user_id=run.user_id, conversation_id=run.conversation_id, limit=window, up_to_run=run.id
    )
    return [_as_chat_message(row) for row in rows]


def _as_chat_message(row: Row[Any]) -> ChatMessage:
    calls = [ToolCallSpec.model_validate(call) for call in row.tool_calls] if row.tool_calls else None
    return ChatMessage(
        role=row.role,
        content=row.content,
        tool_calls=calls,
        tool_call_id=row.tool_call_id,
    )


async def _fail(deps: WorkerDeps, publisher: RunPublisher, code: str, message: str) -> str:
    log.warning("run.failed", code=code, error=message)
    publisher.flush()
    async with deps.db_engine.begin() as connection:
        await runs.fail(connection, run_id=publisher.run_id, attempt=publisher.attempt, error=f"{code}: {message}")
    await publisher.finish(RunFailed(run_id=publisher.run_id, attempt=publisher.attempt, code=code, message=message))
    return "failed"


async def _replay_outcome(deps: WorkerDeps, run: Row[Any], attempt: int) -> None:
    if run.status == "succeeded":
        event: RunCompleted | RunFailed = RunCompleted(run_id=run.id, attempt=attempt, usage=runs.usage_of(run))
    else:
        code, _, message = (run.error or "internal_error: the run failed").partition(": ")
        event = RunFailed(run_id=run.id, attempt=attempt, code=code, message=message)
    await deps.events.deliver(event)
