"""What every agent runner promises the job: run the assistant for one turn, streaming as it goes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from domain.chat import ChatMessage, ToolCallSpec
from domain.events import FinishReason, Usage
from domain.run_request import ChatJob
from domain.text import scrub
from domain.tool_policy import PendingApproval
from workers.publisher import RunPublisher


@dataclass(frozen=True, kw_only=True)
class RunOutcome:
    text: str
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)
    # Calls to client-declared tools, returned to the client rather than run here.
    client_tool_calls: Sequence[ToolCallSpec] = ()
    # The answer's token log probabilities, in OpenAI's shape, when the client asked and the provider told.
    logprobs: list[dict[str, Any]] | None = None
    # Calls to server-side tools whose policy is `approve`, which the run stopped at instead of running.
    pending_approvals: Sequence[PendingApproval] = ()
    # With `pending_approvals`: what the agent had done, in its engine's form, to go on from once decided.
    paused_state: dict[str, Any] | None = None

    def as_message(self) -> ChatMessage:
        # What a model writes is stored even when it wrote a NUL: nobody can be asked to fix it.
        return ChatMessage(role="assistant", content=scrub(self.text), tool_calls=list(self.client_tool_calls) or None)


class AgentRunner(Protocol):
    async def run(self, job: ChatJob, history: Sequence[ChatMessage], publisher: RunPublisher) -> RunOutcome:
        """Run the agent over `history`, streaming through `publisher`, and say how it ended."""
        ...
