"""Following one run to its end: live from the hub, gaps filled from the replay log, and each event
turned into what a surface can show (`api/relay/progress.py`). Every surface follows runs through
`follow`, so the rules live here once: which attempt counts, when a restart matters, how a stream that
cannot go on ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import assert_never

import anyio

from api.relay.event_hub import STOP, Gap, Stop, Subscription
from api.relay.progress import (
    SHUTDOWN_MESSAGE,
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
from domain.event_log import EventLog
from domain.events import (
    ClientToolCallDelta,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunStarted,
    TextDelta,
    ToolCalled,
    ToolReturned,
    is_terminal,
)


async def follow(
    subscription: Subscription, event_log: EventLog, *, silence_timeout_s: float, stop: anyio.Event | None = None
) -> AsyncIterator[RunProgress]:
    """Yield what the run shows, ending with `Completed`, `Failed` or `Detached`.

    `Restarted` comes when a new attempt starts after an earlier one's output was yielded; a new
    attempt before any output is no news. A run that says nothing for `silence_timeout_s` is
    `Failed` with `run_timeout`; a set `stop` ends the stream `Detached`.
    """
    shown = False
    async for event in _events(subscription, event_log, silence_timeout_s=silence_timeout_s, stop=stop):
        match event:
            case RunStarted():
                if shown and event.attempt > 1:
                    shown = False
                    yield Restarted()
                continue
            case TextDelta():
                progress: RunProgress = Text(text=event.text)
            case ClientToolCallDelta():
                progress = ClientToolCall(
                    index=event.index, call_id=event.call_id, name=event.name, arguments=event.arguments
                )
            case ToolCalled():
                progress = ToolCall(call_id=event.call_id, tool=event.tool, args=event.args)
            case ToolReturned():
                progress = ToolResult(
                    call_id=event.call_id, tool=event.tool, result=event.result, is_error=event.is_error
                )
            case RunCompleted():
                progress = Completed(finish_reason=event.finish_reason, usage=event.usage)
            case RunFailed():
                progress = Failed(code=event.code, message=event.message)
            case Detached() | Failed():
                yield event
                return
            case _:
                assert_never(event)
        shown = True
        yield progress


async def _events(
    subscription: Subscription, event_log: EventLog, *, silence_timeout_s: float, stop: anyio.Event | None
) -> AsyncIterator[RunEvent | Failed | Detached]:
    """The run's events in sequence order, each once, then its terminal event, or why it stopped.

    When a run is retried, events of an older attempt that arrive late (a worker thought dead that
    was only slow) are dropped.
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
                    yield Failed(code="run_timeout", message=f"no word from the run for {silence_timeout_s:g} s")
                    return
            else:
                item = queue.get_nowait()
            if isinstance(item, Stop):
                yield Detached(code="server_shutdown", message=SHUTDOWN_MESSAGE)
                return
            batch = await event_log.read(subscription.run_id, after_seq=last_seq) if isinstance(item, Gap) else [item]
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
