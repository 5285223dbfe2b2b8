"""One sender of run events per worker process, batching every run's events into one round trip.

Runs hand their events over without waiting; the sender writes whatever has gathered as one pipeline,
in the order the events were handed over. So each run's events keep their order, and a hundred
concurrent runs cost a handful of round trips, not a hundred.

An urgent event goes out at once, with everything waiting: a run's first text (time to first token
is what a person notices), text its publisher has already held for the coalescing time, and a run's
last event (a job must not end before its outcome is published, so that one is waited for). Other
events wait for the next urgent one, or for the coalescing time at most: a run's `run.started`
usually goes out with its first text, and the text said just before the outcome with the outcome.
A run's events in one batch are one script call and one message for every API process to relay, and
its text deltas that meet there are joined into one event.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from redis.exceptions import RedisError

from domain.event_log import EventLog
from domain.events import RunEvent, TextDelta
from workers.text_pacing import MAX_EVENT_CHARS

log = structlog.get_logger("switchboard.worker.events")


class EventSink:
    def __init__(self, event_log: EventLog, *, interval_s: float = 0.0) -> None:
        self._log = event_log
        self._interval_s = interval_s
        self._pending: list[tuple[RunEvent, asyncio.Future[None] | None]] = []
        self._ready = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._sender: asyncio.Task[None] | None = None
        self._lost = 0

    def start(self) -> None:
        self._sender = asyncio.create_task(self._send_forever(), name="event-sink")

    async def aclose(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._pending:
            await self._send(self._take())

    def send(self, event: RunEvent, *, urgent: bool = False) -> None:
        """Hand an event over; an urgent one goes out with the next round trip, the others within the interval."""
        self._pending.append((event, None))
        self._schedule(urgent=urgent)

    async def deliver(self, event: RunEvent) -> None:
        """Send at once and wait until Redis has it (and everything handed over before it)."""
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((event, delivered))
        self._schedule(urgent=True)
        await delivered

    def _schedule(self, *, urgent: bool) -> None:
        if self._ready.is_set():
            return
        if urgent:
            self._ready.set()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval_s, self._ready.set)

    def _take(self) -> list[tuple[RunEvent, asyncio.Future[None] | None]]:
        batch, self._pending = self._pending, []
        self._ready.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return batch

    async def _send_forever(self) -> None:
        while True:
            await self._ready.wait()
            await self._send(self._take())

    async def _send(self, batch: list[tuple[RunEvent, asyncio.Future[None] | None]]) -> None:
        try:
            await self._log.publish_many(merged_deltas([event for event, _ in batch]))
        except (RedisError, OSError) as exc:
            # Lost events are not fatal to a run: its outcome is in the database, where a waiting
            # client's stream finds it. Whoever waits for delivery is told; the log says it once.
            if self._lost == 0:
                log.error("events.lost", error=str(exc), note="Redis is unreachable; counting until it is back")
            self._lost += len(batch)
            for _, delivered in batch:
                if delivered is not None and not delivered.done():
                    delivered.set_exception(exc)
            return
        if self._lost:
            log.info("events.delivered_again", lost=self._lost)
            self._lost = 0
        for _, delivered in batch:
            if delivered is not None and not delivered.done():
                delivered.set_result(None)


def merged_deltas(events: list[RunEvent]) -> list[RunEvent]:
    """The events in order, each run's text deltas joined with the delta of that run just before them,
    when nothing else of that run came in between (its other events keep their place) and the two
    together are no longer than `MAX_EVENT_CHARS`."""
    merged: list[RunEvent] = []
    last_of_run: dict[str, int] = {}  # run id -> index in `merged` of its latest event
    for event in events:
        at = last_of_run.get(event.run_id)
        if isinstance(event, TextDelta) and at is not None:
            before = merged[at]
            if (
                isinstance(before, TextDelta)
                and before.attempt == event.attempt
                and len(before.text) + len(event.text) <= MAX_EVENT_CHARS
            ):
                merged[at] = before.model_copy(update={"text": before.text + event.text})
                continue
        last_of_run[event.run_id] = len(merged)
        merged.append(event)
    return merged
