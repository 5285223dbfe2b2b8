"""Following a response's run: its progress as a Response object (`writer.py`), collected whole or sent
as typed SSE events, across the pauses its owner has decided."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from redis.exceptions import RedisError

from api.relay.event_hub import Subscription
from api.relay.follow import follow_run
from api.relay.progress import AwaitingApproval, Detached, Failed, Restarted, RunProgress
from api.responses.writer import ResponseWriter, response_id_of
from api.state import AppState
from domain.errors import RunFailure, ServiceUnavailable
from domain.models import FINISHED
from domain.run_views import RunView, unix_seconds

# How long polling an unfinished response reads its replay log for the output so far.
PARTIAL_READ_S = 0.25
QUEUED_STATUS = {"queued": "queued", "running": "in_progress", "awaiting_approval": "in_progress"}


async def whole_run(
    state: AppState, subscription: Subscription, run: RunView, *, stop: anyio.Event | None = None
) -> AsyncIterator[RunProgress]:
    """The run from its first event, across the pauses its owner has decided: a response read back is
    all it said, not only what came before its first pause."""
    # A pause is over when the run has gone on since: it is not the run's state now, or it is not its last event.
    last_seq = await last_seq_of_log(state, run.id) if run.status == "awaiting_approval" else None

    async def events() -> AsyncIterator[RunProgress]:
        after = 0
        while True:
            followed = follow_run(state, subscription, stop=stop, from_start=True, after=after)
            progress_items = going_on(followed) if after else followed
            resumed_at = None
            async for progress in progress_items:
                if (
                    isinstance(progress, AwaitingApproval)
                    and progress.seq
                    and (last_seq is None or progress.seq < last_seq)
                ):
                    resumed_at = progress.seq
                    break
                yield progress
            close = getattr(followed, "aclose", None)
            if close is not None:
                await close()
            if resumed_at is None:
                return
            after = resumed_at

    return events()


async def going_on(progress_items: AsyncIterator[RunProgress]) -> AsyncIterator[RunProgress]:
    """A paused run followed from its pause: the attempt that goes on starts anew, which is no restart
    of anything this response showed."""
    said = False
    async for progress in progress_items:
        if isinstance(progress, Restarted) and not said:
            continue
        said = True
        yield progress


async def last_seq_of_log(state: AppState, run_id: str) -> int:
    """Where the paused run's events stand: what comes after is its going on."""
    try:
        events = await state.event_log.read(run_id)
    except (RedisError, OSError):
        return 0
    return events[-1].seq if events else 0


async def as_it_stands(state: AppState, run: RunView, writer: ResponseWriter) -> dict[str, Any]:
    """A finished run's whole Response (its events replayed, or its stored outcome); an unfinished
    one's output so far: what its replay log gives within `PARTIAL_READ_S`."""
    finished = run.status in (*FINISHED, "awaiting_approval")
    async with state.hub.subscribe(run.id) as subscription:
        await subscription.ready()
        # The writer keeps a failure as the Response's `error`.
        progress = await whole_run(state, subscription, run)
        try:
            with contextlib.suppress(RunFailure), anyio.move_on_after(None if finished else PARTIAL_READ_S):
                await collect(writer, progress)
        finally:
            # Stopped mid-way: closed here, while its subscription is still open.
            close = getattr(progress, "aclose", None)
            if close is not None:
                await close()
    if writer.status in ("queued", "in_progress"):
        # Still going (it may have ended since its row was read: the next poll says so).
        writer.status = QUEUED_STATUS.get(run.status, "in_progress") if not writer.output else "in_progress"
    return writer.response()


def new_writer(run_id: str, created_at: Any, model: str, echo: dict[str, Any]) -> ResponseWriter:
    return ResponseWriter(
        response_id=response_id_of(run_id), created_at=unix_seconds(created_at) or 0, model=model, echo=echo
    )


async def collect(writer: ResponseWriter, progress_items: AsyncIterator[RunProgress]) -> None:
    writer.opening()
    async for progress in progress_items:
        if isinstance(progress, Restarted):
            # Nothing was shown yet: the new attempt's answer is the answer.
            writer.reset()
            continue
        if isinstance(progress, Detached):
            raise ServiceUnavailable(progress.message, code=progress.code)
        writer.feed(progress)
        if isinstance(progress, Failed):
            raise RunFailure(progress.message, code=progress.code)
        if writer.status not in ("in_progress", "queued"):
            return


async def as_sse(
    cleanup: contextlib.AsyncExitStack,
    writer: ResponseWriter,
    progress_items: AsyncIterator[RunProgress],
    *,
    starting_after: int,
) -> AsyncIterator[dict[str, str]]:
    """Each event as SSE, its `event:` its `type` and its `id:` its `sequence_number`; those up to
    `starting_after` were shown before and are left out.

    The last event always goes out: once the replay log is gone, the response is rebuilt from what the
    run stored, in fewer events than it streamed live, so a client can be past all of them. It then
    gets the last one, numbered on from what it saw: its `response` is the whole answer."""
    async with cleanup:
        for event in writer.opening():
            if event["sequence_number"] > starting_after:
                yield _sse_event(event)
        async for progress in progress_items:
            events = writer.feed(progress)
            ended = writer.broken or writer.status not in ("in_progress", "queued")
            for event in events:
                if event["sequence_number"] > starting_after:
                    yield _sse_event(event)
            if ended:
                if events and events[-1]["sequence_number"] <= starting_after:
                    yield _sse_event({**events[-1], "sequence_number": starting_after + 1})
                return


def _sse_event(event: dict[str, Any]) -> dict[str, str]:
    return {"event": event["type"], "id": str(event["sequence_number"]), "data": json.dumps(event)}
