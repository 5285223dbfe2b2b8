"""Starting a run the same way for every surface: record it, listen, enqueue, follow.

The order is the guarantee. The turn is committed before anything can lose it; the subscription is
confirmed before the job exists, so no event can be published to nobody; only then is the job
enqueued, waking one worker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from api.relay.follow import follow
from api.relay.progress import RunProgress
from api.state import AppState
from domain import runs
from domain.database import unavailable_on_connection_errors
from domain.errors import Overloaded, ServiceUnavailable
from domain.job_codec import CHAT_JOB
from domain.run_request import RunRequest


@dataclass(frozen=True, kw_only=True)
class StartedRun:
    run_id: str
    conversation_id: int | None
    conversation_key: str | None
    progress: AsyncIterator[RunProgress]


@asynccontextmanager
async def start_run(
    state: AppState, request: RunRequest, *, stop: anyio.Event | None = None
) -> AsyncIterator[StartedRun]:
    if not state.inflight.try_acquire():
        raise Overloaded("too many runs in progress; retry shortly")
    try:
        run_id = request.run_id
        async with state.hub.subscribe(run_id) as subscription:
            # The subscription is confirmed while the turn is written, not after.
            async with unavailable_on_connection_errors(), state.db_engine.begin() as connection:
                accepted = await runs.accept(connection, request)
            try:
                await subscription.ready()
                # The job names the run; the worker reads everything else from the run's row.
                await state.enqueuer.enqueue(CHAT_JOB, job_id=run_id, payload={"run_id": run_id})
            except Exception:
                await _mark_unqueued(state, run_id)
                raise
            yield StartedRun(
                run_id=run_id,
                conversation_id=accepted.conversation_id,
                conversation_key=accepted.conversation_key,
                progress=follow(
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
            await runs.fail(
                connection,
                run_id=run_id,
                attempt=0,
                code="service_unavailable",
                message="the run could not be handed to a worker",
            )
    except ServiceUnavailable:
        pass
