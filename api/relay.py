"""Following one run's events to their end: live from the hub, gaps filled from the replay log."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import anyio

from api.event_hub import STOP, Gap, Stop, Subscription
from domain.errors import RunTimeout
from domain.event_log import EventLog
from domain.events import RunEvent, is_terminal


async def follow(
    subscription: Subscription, event_log: EventLog, *, silence_timeout_s: float, stop: anyio.Event | None = None
) -> AsyncIterator[RunEvent]:
    """Yield the run's events in sequence order, each once, ending with its terminal event.

    When a run is retried, events of an older attempt that arrive late (a worker thought dead that
    was only slow) are dropped; the consumer sees the new attempt's `run.started` and decides.
    Raises `RunTimeout` when the run says nothing for `silence_timeout_s`; returns early, without a
    terminal event, when `stop` is set.
    """
    watcher = asyncio.create_task(_stop_when(stop, subscription)) if stop is not None else None
    try:
        last_seq = 0
        attempt = 0
        queue = subscription.queue
        while True:
            if queue.empty():
                try:
                    async with asyncio.timeout(silence_timeout_s):
                        item = await queue.get()
                except TimeoutError:
                    raise RunTimeout(f"no word from the run for {silence_timeout_s:g} s") from None
            else:
                item = queue.get_nowait()
            if isinstance(item, Stop):
                return
            if isinstance(item, Gap):
                batch = await event_log.read(subscription.run_id, after_seq=last_seq)
            else:
                batch = [item]
            for event in batch:
                if event.seq <= last_seq or event.attempt < attempt:
                    continue
                last_seq, attempt = event.seq, event.attempt
                yield event
                if is_terminal(event):
                    return
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def _stop_when(stop: anyio.Event, subscription: Subscription) -> None:
    # One waiter per stream, rather than racing a second future against every event.
    await stop.wait()
    subscription.queue.put_nowait(STOP)
