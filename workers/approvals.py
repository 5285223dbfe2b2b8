"""Where a run goes when the model calls tools that need a person's approval.

Both engines stop natively at such calls without running them (PydanticAI's `ApprovalRequiredToolset`
ends the run with `DeferredToolRequests.approvals`, the Agents SDK with `interruptions`), and both hand
the calls here as `PendingApproval`s, named `server.tool` with the model's call id and arguments,
with their own state to go on from. The run then says which calls it wants to make, with which
arguments, and how to answer; the job pauses it (`domain/approvals.py`) until its owner decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from domain.approvals import request_text
from domain.tool_policy import PendingApproval
from workers.agent_runner import RunOutcome
from workers.publisher import RunPublisher


async def stop_for_approval(
    publisher: RunPublisher, outcome: RunOutcome, pending: Sequence[PendingApproval]
) -> RunOutcome:
    """Stop at calls that need approval, asking for the decision; none of them runs."""
    if outcome.paused_state is None:
        raise AssertionError("an engine that stops for approval gives the state to go on from")
    notice = request_text(pending)
    if outcome.text:
        notice = "\n\n" + notice
    await publisher.text(notice)
    return replace(outcome, text=outcome.text + notice, pending_approvals=tuple(pending))
