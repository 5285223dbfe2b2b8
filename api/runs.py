"""Starting a run the same way for every surface: record it, listen, enqueue, follow.

The order is the guarantee. The turn is committed before anything can lose it; the subscription is
confirmed before the job exists, so no event can be published to nobody; only then is the job
enqueued, waking one worker.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio

from api.relay import follow
from api.state import AppState
from domain import runs
from domain.chat import ChatJob, ChatMessage, ModelParams, ToolDefinition
from domain.database import unavailable_on_connection_errors
from domain.errors import Overloaded, ServiceUnavailable
from domain.events import RunEvent
from domain.job_codec import CHAT_JOB


def new_run_id() -> str:
    return "run_" + secrets.token_hex(12)


@dataclass(frozen=True, kw_only=True)
class RunRequest:
    user_id: str
    request_id: str
    assistant: str
    conversation_key: str | None
    new_messages: Sequence[ChatMessage]
    # True when the API made the key up just now, so there is nothing to look up.
    new_conversation: bool = False
    history: list[ChatMessage] | None = None
    system_messages: Sequence[ChatMessage] = ()
    tools: list[ToolDefinition] | None = None
    tool_choice: str | dict[str, object] | None = None
    params: ModelParams = field(default_factory=ModelParams)
    # A surface that names the run's items before the run starts (ChatKit) picks the run id itself.
    run_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class StartedRun:
    run_id: str
    conversation_id: int | None
    conversation_key: str | None
    events: AsyncIterator[RunEvent]


@asynccontextmanager
async def start_run(
    state: AppState, request: RunRequest, *, stop: anyio.Event | None = None
) -> AsyncIterator[StartedRun]:
    if not state.inflight.try_acquire():
        raise Overloaded("too many runs in progress; retry shortly")
    try:
        run_id = request.run_id or new_run_id()
        async with state.hub.subscribe(run_id) as subscription:
            # The subscription is confirmed while the turn is written, not after.
            async with unavailable_on_connection_errors(), state.db_engine.begin() as connection:
                accepted = await runs.accept(
                    connection,
                    run_id=run_id,
                    user_id=request.user_id,
                    assistant=request.assistant,
                    request_id=request.request_id,
                    conversation_key=request.conversation_key,
                    new_conversation=request.new_conversation,
                    new_messages=request.new_messages,
                )
            job = ChatJob(
                run_id=run_id,
                user_id=request.user_id,
                assistant=request.assistant,
                request_id=request.request_id,
                conversation_id=accepted.conversation_id,
                history=request.history,
                system_messages=list(request.system_messages),
                tools=request.tools,
                tool_choice=request.tool_choice,
                params=request.params,
            )
            try:
                await subscription.ready()
                await state.enqueuer.enqueue(CHAT_JOB, job_id=run_id, payload=job.model_dump(mode="json"))
            except Exception:
                await _mark_unqueued(state, run_id)
                raise
            yield StartedRun(
                run_id=run_id,
                conversation_id=accepted.conversation_id,
                conversation_key=accepted.conversation_key,
                events=follow(
                    subscription,
                    state.event_log,
                    # Past the run timeout the worker reports the failure itself; only a run that is
                    # lost (its worker gone, say) stays silent for longer than the grace on top.
                    silence_timeout_s=state.settings.run_timeout_s + state.settings.relay_grace_s,
                    stop=stop,
                ),
            )
    finally:
        state.inflight.release()


async def _mark_unqueued(state: AppState, run_id: str) -> None:
    """The turn is stored but no worker will ever see it: say so on the run, if the database lets us."""
    try:
        async with unavailable_on_connection_errors(), state.db_engine.begin() as connection:
            await runs.fail(connection, run_id=run_id, attempt=0, error="service_unavailable: could not enqueue")
    except ServiceUnavailable:
        pass
