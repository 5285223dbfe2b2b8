"""A run's raw events, in order, for a client that joins (or rejoins) it at any point, on any API process.

Subscribe first, then read the replay log, then go live, dropping what was already sent: so nothing
published between the read and the subscription is missed or doubled. Events of an older attempt that
arrive late are dropped, as `follow.py` does; a `run.started` with a higher attempt tells the client
that the run started over. The stream ends after the terminal event.

When the replay log is gone (expired, or lost with its Redis) and the run has finished, its stored
outcome is synthesized as a short stream: `run.started`, the whole answer as one `text.delta`, its
client tool calls, then `run.completed`, `run.failed` or `run.cancelled`. Synthesized events are numbered from 1 and
`after` applies to them; a client already past them gets the terminal event alone. If the log is lost
part-way, the rest of the stored answer follows what was read, numbered on from there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Literal, get_args

import anyio
from redis.exceptions import RedisError

from api.relay.event_hub import GAP, STOP, Gap, Stop, Subscription
from api.state import AppState
from domain import approvals, runs
from domain.database import unavailable_on_connection_errors
from domain.errors import ServiceUnavailable
from domain.events import (
    ApprovalRequest,
    ClientToolCallDelta,
    RunAwaitingApproval,
    RunCancelled,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunStarted,
    TerminalEvent,
    TextDelta,
)
from domain.models import FINISHED
from domain.runs import StoredOutcome
from domain.tool_policy import PendingApproval

# Where a run stands still: it has ended, or it waits for a person and says nothing until then.
STOPPED = (*FINISHED, approvals.AWAITING)
LOG_RETRY_S = 0.25


def is_terminal(event: RunEvent) -> bool:
    """Whether the event ends what a reader follows: the run's end, or its pause for approval."""
    return isinstance(event, get_args(TerminalEvent))


async def replay_run(
    state: AppState, run_id: str, *, after: int = 0, stop: anyio.Event | None = None
) -> AsyncIterator[RunEvent]:
    """The run's events with seq > `after`, live until its terminal event (or `stop`, or silence)."""
    async with state.hub.subscribe(run_id) as subscription:
        await subscription.ready()
        source = RunEventSource(state, subscription, after=after, catch_up_first=True)
        async for event in source.events(stop=stop):
            yield event


Ending = Literal["stopped", "silent", "lost", "told"]


class RunEventSource:
    """One run's events for one listener, through a subscription the caller holds.

    `events()` ends after the terminal event; when it ends without one, `ended` says why: `stopped`
    (the server is shutting down), `silent` (no word for longer than a run may take, and no end in
    its row), `lost` (Redis lost the log of a run that has not ended), or `told` (the listener resumed
    after the run's end: there is nothing more to say).
    """

    def __init__(
        self, state: AppState, subscription: Subscription, *, after: int = 0, catch_up_first: bool = False
    ) -> None:
        self.ended: Ending | None = None
        self._silence_timeout_s = state.settings.run_timeout_s + state.settings.relay_grace_s
        reconnect_s = state.settings.relay_reconnect_s
        # Start with what the log holds, before anything already queued live: events that arrived
        # since the subscription are in the log too, and taking them first would skip the log's older ones.
        self._catch_up_first = catch_up_first
        self._state = state
        self._subscription = subscription
        self._after = after
        self._reconnect_s = reconnect_s
        # The last event taken from the log or live (sent, or skipped as at or below `after`), and its attempt.
        self._last_seq = 0
        self._attempt = 0
        # What the current attempt said, to finish its answer from the database if the log is lost.
        self._text: list[str] = []
        self._client_calls = False

    async def events(self, *, stop: anyio.Event | None = None) -> AsyncIterator[RunEvent]:
        watcher = asyncio.create_task(_stop_when(stop, self._subscription)) if stop is not None else None
        try:
            async for event in self._events(self._silence_timeout_s):
                yield event
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    async def _events(self, silence_timeout_s: float) -> AsyncIterator[RunEvent]:
        subscription = self._subscription
        catch_up = self._catch_up_first
        while True:
            item: RunEvent | Gap | Stop
            silent = False
            if catch_up:
                item, catch_up = GAP, False
            else:
                try:
                    async with asyncio.timeout(silence_timeout_s):
                        item = await subscription.take()
                except TimeoutError:
                    item = GAP  # silence: the end may be in the log, or only in the database
                    silent = True
            if isinstance(item, Stop):
                self.ended = "stopped"
                return
            if isinstance(item, Gap):
                batch = await self._catch_up()
                if batch is None:
                    self.ended = "lost"
                    async for event in self._from_database():
                        self.ended = None
                        yield event
                    return
            else:
                batch = [item]
            for event in batch:
                if event.seq <= self._last_seq or event.attempt < self._attempt:
                    continue
                self._last_seq, self._attempt = event.seq, event.attempt
                self._note(event)
                if event.seq > self._after:
                    yield event
                if is_terminal(event):
                    if event.seq > self._after:
                        return
                    if not isinstance(event, RunAwaitingApproval):
                        self.ended = "told"  # the listener had the run's end already
                        return
                    # A pause the listener saw already: what it follows is the run going on from there.
            if silent:
                # Nothing for longer than a run may take: its end, if it has one, is in its row.
                self.ended = "silent"
                if await self._finished():
                    async for event in self._from_database():
                        self.ended = None
                        yield event
                return

    def _note(self, event: RunEvent) -> None:
        if isinstance(event, RunStarted):
            self._text.clear()
            self._client_calls = False
        elif isinstance(event, TextDelta):
            self._text.append(event.text)
        elif isinstance(event, ClientToolCallDelta):
            self._client_calls = True

    async def _catch_up(self) -> list[RunEvent] | None:
        """The log past what was seen; None when it cannot say (Redis away too long, or the log lost)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._reconnect_s
        run_id = self._subscription.run_id
        while True:
            try:
                log = await self._state.event_log.read(run_id)
                break
            except (RedisError, OSError):
                if loop.time() >= deadline:
                    return None
                await asyncio.sleep(LOG_RETRY_S)
        if self._last_seq and all(event.seq != self._last_seq for event in log):
            return None  # a new, empty Redis: the log that held what was seen is gone
        if not log and await self._finished():
            return None  # expired, or lost: the run has ended, and its row says how
        return log

    async def _outcome(self) -> StoredOutcome | None:
        try:
            async with unavailable_on_connection_errors(), self._state.db_engine.connect() as connection:
                return await runs.stored_outcome(connection, self._subscription.run_id)
        except ServiceUnavailable:
            return None

    async def _pending_approvals(self) -> list[approvals.ApprovalView] | None:
        try:
            async with unavailable_on_connection_errors(), self._state.db_engine.connect() as connection:
                return await approvals.pending(connection, run_id=self._subscription.run_id)
        except ServiceUnavailable:
            return None

    async def _finished(self) -> bool:
        outcome = await self._outcome()
        return outcome is not None and outcome.status in STOPPED

    async def _from_database(self) -> AsyncIterator[RunEvent]:
        """The run's end from its row; nothing when it has not ended (the client may come back)."""
        outcome = await self._outcome()
        if outcome is None or outcome.status not in STOPPED:
            return
        run_id = self._subscription.run_id
        attempt = max(outcome.attempt, 1)
        answer = outcome.answer
        text = answer.text if answer is not None else ""
        calls = (answer.tool_calls or []) if answer is not None else []
        terminal: RunEvent
        if outcome.status == approvals.AWAITING:
            asked = await self._pending_approvals()
            if asked is None:
                return
            text = approvals.request_text(
                [PendingApproval(call_id=view.call_id, tool=view.tool, arguments=view.arguments) for view in asked]
            )
            terminal = RunAwaitingApproval(
                run_id=run_id,
                attempt=attempt,
                approvals=[
                    ApprovalRequest(
                        call_id=view.call_id,
                        tool=view.tool,
                        arguments=view.arguments,
                        arguments_hash=view.arguments_hash,
                    )
                    for view in asked
                ],
            )
        elif outcome.status == "succeeded":
            terminal = RunCompleted(
                run_id=run_id, attempt=attempt, finish_reason="tool_calls" if calls else "stop", usage=outcome.usage
            )
        elif outcome.status == "cancelled":
            terminal = RunCancelled(run_id=run_id, attempt=attempt)
        else:
            terminal = RunFailed(
                run_id=run_id,
                attempt=attempt,
                code=outcome.error_code or "internal_error",
                message=outcome.error or "the run failed",
            )
        shown = "".join(self._text)
        events: list[RunEvent] = []
        if self._last_seq and self._attempt == attempt and text.startswith(shown):
            # Part-way through: the rest of what was being said, on from what was sent.
            text = text[len(shown) :]
            if self._client_calls:
                calls = []
        else:
            events.append(RunStarted(run_id=run_id, attempt=attempt))
        if text:
            events.append(TextDelta(run_id=run_id, attempt=attempt, text=text))
        for index, call in enumerate(calls):
            events.append(
                ClientToolCallDelta(
                    run_id=run_id,
                    attempt=attempt,
                    index=index,
                    call_id=call.id,
                    name=call.function.name,
                    arguments=call.function.arguments,
                )
            )
        events.append(terminal)
        if self._last_seq:
            first = max(self._last_seq, self._after) + 1
            numbered = [event.model_copy(update={"seq": first + n}) for n, event in enumerate(events)]
        else:
            numbered = [event.model_copy(update={"seq": n + 1}) for n, event in enumerate(events)]
            past = [event for event in numbered if event.seq > self._after]
            # A client already past the synthesized stream still learns how the run ended.
            numbered = past or numbered[-1:]
        for event in numbered:
            yield event


async def _stop_when(stop: anyio.Event, subscription: Subscription) -> None:
    await stop.wait()
    subscription.interrupt(STOP)
