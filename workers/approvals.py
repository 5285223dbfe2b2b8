"""Where a run goes when the model calls tools that need a person's approval.

Both engines stop natively at such calls without running them (PydanticAI's `ApprovalRequiredToolset`
ends the run with `DeferredToolRequests.approvals`, the Agents SDK with `interruptions`), and both hand
the calls here as `PendingApproval`s, named `server.tool` with the model's call id and arguments.

Approval itself is not there yet (issue 11, section 2): for now the run ends, saying which calls it
stopped at and that nothing was done. The outcome keeps the calls (`RunOutcome.pending_approvals`) for
the job to store once there is a state to store them in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from domain.tool_policy import PendingApproval, approval_unavailable_text
from workers.agent_runner import RunOutcome
from workers.publisher import RunPublisher


async def stop_for_approval(
    publisher: RunPublisher, outcome: RunOutcome, pending: Sequence[PendingApproval]
) -> RunOutcome:
    """End the run at calls that need approval: say what they were, run none of them."""
    notice = approval_unavailable_text(pending)
    if outcome.text:
        notice = "\n\n" + notice
    await publisher.text(notice)
    return replace(outcome, text=outcome.text + notice, pending_approvals=tuple(pending))
