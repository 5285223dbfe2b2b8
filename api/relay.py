"""Following one run's events to their end: live from the hub, gaps filled from the replay log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anyio

from api.event_hub import Gap, Subscription
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
    last_seq = 0
    attempt = 0
    while True:
        item = await _next(subscription, silence_timeout_s, stop)
        if item is None:
            return
        batch = await event_log.read(subscription.run_id, after_seq=last_seq) if isinstance(item, Gap) else [item]
        for event in batch:
            if event.seq <= last_seq or event.attempt < attempt:
                continue
            last_seq, attempt = event.seq, event.attempt
            yield event
            if is_terminal(event):
                return


async def _next(subscription: Subscription, timeout_s: float, stop: anyio.Event | None) -> RunEvent | Gap | None:
    queue = subscription.queue
    if not queue.empty():
        return queue.get_nowait()
    if stop is None:
        try:
            return await asyncio.wait_for(queue.get(), timeout_s)
        except TimeoutError:
            raise RunTimeout(f"no word from the run for {timeout_s:g} s") from None
    getter = asyncio.ensure_future(queue.get())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({getter, stopper}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not getter.done():
            getter.cancel()
    if getter in done:
        return getter.result()
    if stopper in done:
        return None
    raise RunTimeout(f"no word from the run for {timeout_s:g} s")
