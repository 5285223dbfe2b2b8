"""Where a run goes when the model calls tools that need a person's approval.

Both engines stop natively at such calls without running them (PydanticAI's `ApprovalRequiredToolset`
ends the run with `DeferredToolRequests.approvals`, the Agents SDK with `interruptions`), and both hand
the calls here as `PendingApproval`s, named `server.tool` with the model's call id and arguments.

The run then says which calls it wants to make, with which arguments, and how to answer; the job
pauses it (`domain/approvals.py`) with the engine's state, to go on once its owner decides. An engine
that cannot give its state to go on from ends the run there instead, having done nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from domain.approvals import request_text
from domain.tool_policy import PendingApproval, approval_unavailable_text
from workers.agent_runner import RunOutcome
from workers.publisher import RunPublisher


async def stop_for_approval(
    publisher: RunPublisher, outcome: RunOutcome, pending: Sequence[PendingApproval]
) -> RunOutcome:
    """Stop at calls that need approval: ask for the decision, or (no state to go on from) say that
    nothing was done. Runs none of them."""
    can_pause = outcome.paused_state is not None
    notice = request_text(pending) if can_pause else approval_unavailable_text(pending)
    if outcome.text:
        notice = "\n\n" + notice
    await publisher.text(notice)
    return replace(outcome, text=outcome.text + notice, pending_approvals=tuple(pending) if can_pause else ())
