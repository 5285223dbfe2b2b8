"""Following one run to its end for a surface: its events (`api/relay/replay.py`, which handles lost
connections, lost logs and late attempts), turned into what a surface can show
(`api/relay/progress.py`).

Every surface follows runs through here, so the rules live here once: when a restart matters, and
how a stream ends when it cannot go on. A stream never ends without a terminal item: a run that says
nothing for longer than it may take is `Failed` with `run_timeout`; a stream the server stops is
`Detached` with `server_shutdown`; one whose run's events Redis lost before the run ended is
`Detached` with `stream_interrupted` (the run goes on, and its answer is stored).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import assert_never

import anyio

from api.relay.event_hub import Subscription
from api.relay.progress import (
    SHUTDOWN_MESSAGE,
    AwaitingApproval,
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
    ToolsOffered,
)
from api.relay.replay import RunEventSource
from api.state import AppState
from domain.events import (
    ClientToolCallDelta,
    RunAwaitingApproval,
    RunCancelled,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunStarted,
    TextDelta,
    ToolCalled,
    ToolReturned,
    ToolsListed,
)

INTERRUPTED_MESSAGE = "the connection to the run's events was lost; its answer will be stored in the conversation"


def follow_run(
    state: AppState,
    subscription: Subscription,
    *,
    stop: anyio.Event | None = None,
    from_start: bool = False,
    after: int = 0,
) -> AsyncIterator[RunProgress]:
    """Follow a run this process subscribed to. `from_start` replays what it already said first, from
    after event `after`."""
    source = RunEventSource(state, subscription, after=after, catch_up_first=from_start)
    silence_s = state.settings.run_timeout_s + state.settings.relay_grace_s
    # A client resuming after an event has shown what came before it.
    return _progress(source, stop=stop, silence_s=silence_s, shown=after > 0)


async def _progress(
    source: RunEventSource, *, stop: anyio.Event | None, silence_s: float, shown: bool
) -> AsyncIterator[RunProgress]:
    """What the run shows, ending with `Completed`, `Cancelled`, `Failed` or `Detached`.

    `Restarted` comes when the run starts over after some of its output was shown; a start before
    any output is no news.
    """
    async for event in source.events(stop=stop):
        if isinstance(event, RunStarted):
            if shown:
                shown = False
                yield Restarted()
            continue
        progress = _shown(event)
        # A listing of tools says nothing: a restart after it is no news.
        shown = shown or not isinstance(progress, ToolsOffered)
        yield progress
        if isinstance(progress, Completed | Cancelled | AwaitingApproval | Failed):
            return
    match source.ended:
        case "told":
            pass  # resumed after the end: the client has it all
        case "stopped":
            yield Detached(code="server_shutdown", message=SHUTDOWN_MESSAGE)
        case "silent":
            yield Failed(code="run_timeout", message=f"no word from the run for {silence_s:g} s")
        case "lost" | None:
            yield Detached(code="stream_interrupted", message=INTERRUPTED_MESSAGE)
        case _:
            assert_never(source.ended)


def _shown(event: RunEvent) -> RunProgress:
    match event:
        case TextDelta():
            return Text(text=event.text, seq=event.seq)
        case ClientToolCallDelta():
            return ClientToolCall(
                index=event.index, call_id=event.call_id, name=event.name, arguments=event.arguments, seq=event.seq
            )
        case ToolsListed():
            return ToolsOffered(server=event.server, tools=tuple(event.tools), seq=event.seq)
        case ToolCalled():
            return ToolCall(call_id=event.call_id, tool=event.tool, args=event.args, seq=event.seq)
        case ToolReturned():
            return ToolResult(
                call_id=event.call_id, tool=event.tool, result=event.result, is_error=event.is_error, seq=event.seq
            )
        case RunCompleted():
            return Completed(
                finish_reason=event.finish_reason, usage=event.usage, logprobs=event.logprobs, seq=event.seq
            )
        case RunFailed():
            return Failed(code=event.code, message=event.message, seq=event.seq)
        case RunCancelled():
            return Cancelled(seq=event.seq)
        case RunAwaitingApproval():
            return AwaitingApproval(approvals=tuple(event.approvals), seq=event.seq)
        case RunStarted():
            raise AssertionError("run.started is the restart rule's, not something to show")
        case _:
            assert_never(event)
