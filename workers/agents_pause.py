"""Pausing an Agents SDK run for approval, and going on from where it paused, the SDK's own way.

A run whose model called tools that need approval ends with `interruptions` (one `ToolApprovalItem`
per call). Its `RunState` (`to_state()`), serialized with the SDK's `to_json()`, is what the run keeps
while it waits: everything the agent was given and did, the calls it stopped at, and its usage so far.
The worker that goes on restores it with `RunState.from_json` against the same agent, approves or
rejects each interruption as its owner decided (the SDK runs the approved calls; a rejected one is
answered with the rejection message, which tells the model why), and runs it on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents import Agent, RunResultStreaming, RunState, ToolApprovalItem

from domain.errors import RunFailure
from domain.run_request import CallDecision

PAUSED_ENGINE = "openai-agents"
# What the model is told of a call that was never decided (it cannot happen: a run goes on only once
# every call is decided); failing closed, it is not run.
UNDECIDED = "This call was not decided, so it was not run."


def paused_state(streamed: RunResultStreaming) -> dict[str, Any]:
    """What a run that stopped at interruptions keeps until they are decided: JSON-able data."""
    return {"engine": PAUSED_ENGINE, "state": streamed.to_state().to_json()}


async def resumed_state(agent: Agent[Any], paused: dict[str, Any], decisions: Sequence[CallDecision]) -> RunState[Any]:
    """The paused run, restored against `agent` (built as for a fresh run), with every call it stopped at
    approved or rejected as decided, by the model's call id."""
    if paused.get("engine") != PAUSED_ENGINE:
        raise RunFailure("the run paused on another engine and cannot go on here", code="internal_error")
    try:
        state = await RunState.from_json(agent, paused.get("state") or {})
    except Exception as exc:
        # The SDK redacts the snapshot from its errors; the type says enough for the log.
        raise RunFailure(
            f"the paused run's state cannot be restored ({type(exc).__name__})", code="internal_error"
        ) from exc
    by_call = {decision.call_id: decision for decision in decisions}
    for item in state.get_interruptions():
        _decide(state, item, by_call.get(item.call_id or ""))
    return state


def _decide(state: RunState[Any], item: ToolApprovalItem, decision: CallDecision | None) -> None:
    if decision is not None and decision.approved:
        state.approve(item)
    else:
        state.reject(item, rejection_message=_denied_message(decision))


def _denied_message(decision: CallDecision | None) -> str:
    if decision is None:
        return UNDECIDED
    return f"The user denied this call: {decision.reason}" if decision.reason else "The user denied this call."
