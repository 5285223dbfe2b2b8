"""Starting a run the same way for every surface: admit it, record it, listen, enqueue, follow.

The order is the guarantee. A run is refused (429) before anything is written: when this process
follows too many runs, when the queue is full, when the user has too many runs unfinished. The turn is
committed before anything can lose it; the subscription is confirmed before the job exists, so no
event can be published to nobody; only then is the job enqueued, waking one worker.

A request whose `Idempotency-Key` names a run accepted before is that run's retry: nothing is written
or enqueued, and the run is followed from its first event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import anyio
import structlog

from api.relay import admission
from api.relay.cancel import deliver_cancels
from api.relay.follow import follow_run
from api.relay.progress import RunProgress
from api.state import AppState
from domain import runs
from domain.admission import IdempotencyKey, KeyTaken, QueueFull
from domain.database import unavailable_on_connection_errors
from domain.errors import Overloaded, ServiceUnavailable
from domain.job_codec import CHAT_JOB
from domain.run_request import RunRequest

log = structlog.get_logger("switchboard.api.start")

# How often a request looks again for the run a concurrent request with its key recorded first.
KEY_RACE_TRIES = 3


@dataclass(frozen=True, kw_only=True)
class StartedRun:
    run_id: str
    conversation_id: int | None
    conversation_key: str | None
    created_at: datetime
    progress: AsyncIterator[RunProgress]
    # An earlier request with the same `Idempotency-Key` started this run: it is followed from its first event.
    replayed: bool = False


@asynccontextmanager
async def start_run(
    state: AppState,
    request: RunRequest,
    *,
    stop: anyio.Event | None = None,
    idempotency: IdempotencyKey | None = None,
) -> AsyncIterator[StartedRun]:
    # A retry of a run accepted before adds nothing to the queue: a full queue refuses it only once
    # the key is known to name no run (in `runs.accept`).
    queue_full = await admission.queue_full(state)
    if queue_full and idempotency is None:
        raise QueueFull()
    if not state.inflight.try_acquire():
        raise Overloaded("too many runs in progress; retry shortly")
    try:
        async with AsyncExitStack() as listening:
            # The subscription is confirmed while the turn is written, not after.
            subscription = await listening.enter_async_context(state.hub.subscribe(request.run_id))
            accepted = await _accept(state, request, idempotency=idempotency, queue_full=queue_full)
            replayed = accepted.run_id != request.run_id
            if accepted.interrupted:
                # Policy `interrupt`: the turns in progress stop, keeping what they said; this one goes next.
                await deliver_cancels(state, accepted.interrupted)
            if replayed:
                # An earlier request's run answers this one: listen to it instead.
                await listening.aclose()
                subscription = await listening.enter_async_context(state.hub.subscribe(accepted.run_id))
                await subscription.ready()
            else:
                try:
                    await subscription.ready()
                    # The job names the run; the worker reads everything else from the run's row.
                    await state.enqueuer.enqueue(CHAT_JOB, job_id=request.run_id, payload={"run_id": request.run_id})
                except Exception:
                    await _mark_unqueued(state, request.run_id)
                    raise
                state.queue.admitted()
            yield StartedRun(
                run_id=accepted.run_id,
                conversation_id=accepted.conversation_id,
                conversation_key=accepted.conversation_key,
                created_at=accepted.created_at,
                progress=follow_run(state, subscription, stop=stop, from_start=replayed),
                replayed=replayed,
            )
    finally:
        state.inflight.release()


async def _accept(
    state: AppState, request: RunRequest, *, idempotency: IdempotencyKey | None, queue_full: bool
) -> runs.AcceptedTurn:
    """Record the run (or find the one its key names) in a transaction of its own."""
    for _ in range(KEY_RACE_TRIES):
        try:
            async with unavailable_on_connection_errors(), state.db_engine.begin() as connection:
                return await runs.accept(
                    connection,
                    request,
                    idempotency=idempotency,
                    max_active_runs=state.settings.max_active_runs_per_user,
                    queue_full=queue_full,
                )
        except KeyTaken:
            # Rolled back; the next look finds the run that took the key.
            log.info("run.idempotency_key_taken", run_id=request.run_id)
    raise ServiceUnavailable("the Idempotency-Key is being used by requests that keep failing; retry shortly")


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
