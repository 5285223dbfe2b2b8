"""Following one run to its end: live from the hub, gaps filled from the replay log, the database as
the last word; each event turned into what a surface can show (`api/relay/progress.py`).

Every surface follows runs through here, so the rules live here once: which attempt counts, when a
restart matters, and how a stream ends when it cannot go on. Redis is a fast path that may vanish:
when the live connection drops, a stream waits up to `SWITCHBOARD_RELAY_RECONNECT_S` for Redis and
catches up from the replay log; when the log is gone with the Redis that held it, the run's row says
how it ended (the rest of its stored answer, then its end), or, if it has not ended, the stream ends
with `stream_interrupted`. A stream never ends without a terminal item, and never hangs longer than
the run timeout plus a grace.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import assert_never

import anyio
from redis.exceptions import RedisError

from api.relay.event_hub import GAP, STOP, Gap, Stop, Subscription
from api.relay.progress import (
    SHUTDOWN_MESSAGE,
    Cancelled,
    ClientToolCall,
    Completed,
    Detached,
    Failed,
    Restarted,
    RunProgress,
    Text,
    ToolCall,
    ToolResult,
)
from api.state import AppState
from domain import runs
from domain.database import unavailable_on_connection_errors
from domain.errors import ServiceUnavailable
from domain.event_log import EventLog
from domain.events import (
    ClientToolCallDelta,
    RunCancelled,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunStarted,
    TextDelta,
    ToolCalled,
    ToolReturned,
)
from domain.models import FINISHED
from domain.runs import StoredOutcome

INTERRUPTED_MESSAGE = "the connection to the run's events was lost; its answer will be stored in the conversation"
LOG_RETRY_S = 0.25

LoadOutcome = Callable[[], Awaitable[StoredOutcome | None]]


def follow_run(
    state: AppState, subscription: Subscription, *, stop: anyio.Event | None = None, from_start: bool = False
) -> AsyncIterator[RunProgress]:
    """Follow a run this process subscribed to. `from_start` replays what it already said first."""
    settings = state.settings

    async def load_outcome() -> StoredOutcome | None:
        async with unavailable_on_connection_errors(), state.db_engine.connect() as connection:
            return await runs.stored_outcome(connection, subscription.run_id)

    return follow(
        subscription,
        state.event_log,
        load_outcome=load_outcome,
        # Past the run timeout the worker (or the reconciler) reports the failure itself; only a run
        # whose every report was lost stays silent for longer than the grace on top.
        silence_timeout_s=settings.run_timeout_s + settings.relay_grace_s,
        reconnect_s=settings.relay_reconnect_s,
        stop=stop,
        from_start=from_start,
    )


async def follow(
    subscription: Subscription,
    event_log: EventLog,
    *,
    load_outcome: LoadOutcome,
    silence_timeout_s: float,
    reconnect_s: float,
    stop: anyio.Event | None = None,
    from_start: bool = False,
) -> AsyncIterator[RunProgress]:
    """Yield what the run shows, ending with `Completed`, `Failed` or `Detached`.

    `Restarted` comes when a new attempt starts after an earlier one's output was yielded; a new
    attempt before any output is no news.
    """
    follower = _Follower(subscription, event_log, load_outcome, reconnect_s=reconnect_s)
    if from_start:
        subscription.queue.put_nowait(GAP)
    watcher = asyncio.create_task(_stop_when(stop, subscription)) if stop is not None else None
    try:
        async for progress in follower.progress(silence_timeout_s):
            yield progress
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


class _LogLost:
    """Live delivery was interrupted and the replay log cannot fill the gap."""


class _Follower:
    def __init__(
        self, subscription: Subscription, event_log: EventLog, load_outcome: LoadOutcome, *, reconnect_s: float
    ) -> None:
        self._subscription = subscription
        self._event_log = event_log
        self._load_outcome = load_outcome
        self._reconnect_s = reconnect_s
        self._last_seq = 0
        self._attempt = 0
        # What the current attempt has shown, to finish its answer from the database if need be.
        self._shown_text: list[str] = []
        self._shown_calls = False
        self._shown_client_calls = False

    async def progress(self, silence_timeout_s: float) -> AsyncIterator[RunProgress]:
        async for event in self._events(silence_timeout_s):
            match event:
                case _LogLost():
                    async for progress in self._from_database():
                        yield progress
                    return
                case Failed(code="run_timeout"):
                    # Silence: the run's end may have been written while its events were lost.
                    async for progress in self._from_database(otherwise=event):
                        yield progress
                    return
                case Failed() | Detached():
                    yield event
                    return
                case _:
                    for progress in self._shown(event):
                        yield progress

    def _shown(self, event: RunEvent) -> list[RunProgress]:
        match event:
            case RunStarted():
                if event.attempt > 1 and (self._shown_text or self._shown_calls):
                    self._shown_text.clear()
                    self._shown_calls = self._shown_client_calls = False
                    return [Restarted()]
                return []
            case TextDelta():
                self._shown_text.append(event.text)
                return [Text(text=event.text)]
            case ClientToolCallDelta():
                self._shown_calls = self._shown_client_calls = True
                return [
                    ClientToolCall(index=event.index, call_id=event.call_id, name=event.name, arguments=event.arguments)
                ]
            case ToolCalled():
                self._shown_calls = True
                return [ToolCall(call_id=event.call_id, tool=event.tool, args=event.args)]
            case ToolReturned():
                return [
                    ToolResult(call_id=event.call_id, tool=event.tool, result=event.result, is_error=event.is_error)
                ]
            case RunCompleted():
                return [Completed(finish_reason=event.finish_reason, usage=event.usage)]
            case RunFailed():
                return [Failed(code=event.code, message=event.message)]
            case RunCancelled():
                return [Cancelled()]
            case _:
                assert_never(event)

    async def _events(self, silence_timeout_s: float) -> AsyncIterator[RunEvent | Failed | Detached | _LogLost]:
        """The run's events in sequence order, each once, then its terminal event, or why it stopped.

        Events of an older attempt that arrive late (a worker thought dead that was only slow) are dropped.
        """
        queue = self._subscription.queue
        while True:
            item: RunEvent | Gap | Stop
            if queue.empty():
                try:
                    async with asyncio.timeout(silence_timeout_s):
                        item = await queue.get()
                except TimeoutError:
                    yield Failed(code="run_timeout", message=f"no word from the run for {silence_timeout_s:g} s")
                    return
            else:
                item = queue.get_nowait()
            if isinstance(item, Stop):
                yield Detached(code="server_shutdown", message=SHUTDOWN_MESSAGE)
                return
            if isinstance(item, Gap):
                batch = await self._catch_up()
                if batch is None:
                    yield _LogLost()
                    return
            else:
                batch = [item]
            for event in batch:
                if event.seq <= self._last_seq or event.attempt < self._attempt:
                    continue
                self._last_seq, self._attempt = event.seq, event.attempt
                yield event
                if isinstance(event, RunCompleted | RunFailed | RunCancelled):
                    return

    async def _catch_up(self) -> list[RunEvent] | None:
        """The log past what was seen; None when it cannot say (Redis away too long, or the log lost)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._reconnect_s
        while True:
            try:
                log = await self._event_log.read(self._subscription.run_id)
                break
            except (RedisError, OSError):
                if loop.time() >= deadline:
                    return None
                await asyncio.sleep(LOG_RETRY_S)
        if self._last_seq and all(event.seq != self._last_seq for event in log):
            return None  # a new, empty Redis: the log that held what was seen is gone
        if not log and await self._finished():
            return None  # nothing published, or lost; the run has ended, and its row says how
        return log

    async def _finished(self) -> bool:
        try:
            outcome = await self._load_outcome()
        except ServiceUnavailable:
            return False
        return outcome is not None and outcome.status in FINISHED

    async def _from_database(self, otherwise: Failed | None = None) -> AsyncIterator[RunProgress]:
        """The rest of the run from its row: the rest of its answer, then its end; or why there is none."""
        interrupted = otherwise or Detached(code="stream_interrupted", message=INTERRUPTED_MESSAGE)
        try:
            outcome = await self._load_outcome()
        except ServiceUnavailable:
            outcome = None
        if outcome is None or outcome.status not in FINISHED:
            yield interrupted
            return
        if outcome.status == "failed":
            yield Failed(code=outcome.error_code or "internal_error", message=outcome.error or "the run failed")
            return
        answer = outcome.answer
        if answer is None and outcome.status == "cancelled" and not self._shown_text:
            yield Cancelled()
            return
        if answer is None:
            yield interrupted
            return
        shown = "".join(self._shown_text)
        if not answer.text.startswith(shown):
            # What was shown is not the start of the stored answer: a later attempt wrote it.
            yield Restarted()
            shown = ""
        if rest := answer.text[len(shown) :]:
            yield Text(text=rest)
        calls = answer.tool_calls or []
        if not self._shown_client_calls:
            for index, call in enumerate(calls):
                yield ClientToolCall(
                    index=index, call_id=call.id, name=call.function.name, arguments=call.function.arguments
                )
        if outcome.status == "cancelled":
            yield Cancelled()
        else:
            yield Completed(finish_reason="tool_calls" if calls else "stop", usage=outcome.usage)


async def _stop_when(stop: anyio.Event, subscription: Subscription) -> None:
    # One waiter per stream, rather than racing a second future against every event.
    await stop.wait()
    subscription.queue.put_nowait(STOP)
