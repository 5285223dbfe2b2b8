"""A turn to run, in one shape: what a surface asks for, what the database records, what a worker runs.

What a run's model is given beyond the stored history is declared once, in `ModelInput`, and the
fields a run is known by once, in `RunSpec`. A surface fills in a `RunRequest` (the spec plus the
conversation and the new turn to store); `domain.runs.accept` records it, model input included, so
the run can be queued again from the database alone; a worker rebuilds it as a `ChatJob` (the spec
plus the conversation's row id) when it claims the run. Redis carries only the run id.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from domain.chat import ChatMessage, ModelParams, ToolChoice, ToolDefinition

# What a turn sent to a conversation that has one queued or running does: wait its turn, be refused
# (409 `conversation_busy`), or stop the one in progress and go next.
ConversationPolicy = Literal["enqueue", "reject", "interrupt"]


def new_run_id() -> str:
    return "run_" + secrets.token_hex(12)


class ModelInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    # When the client sent the whole conversation (Open WebUI does), it is the truth: the worker uses it
    # instead of the stored history. `None` means "use the stored window".
    history: list[ChatMessage] | None = None
    # The client's system and developer messages, put before the stored window when `history` is None.
    system_messages: list[ChatMessage] = Field(default_factory=list)
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    params: ModelParams = Field(default_factory=ModelParams)
    # What the surface that started the run repeats about the request whenever it shows the run again
    # (the Responses API's `metadata`, `text`, `background`...). Kept with the run; the model never sees it.
    echo: dict[str, Any] | None = None

    def stored_input(self) -> dict[str, Any]:
        """The model input as the run's row keeps it: only what differs from the defaults."""
        return self.model_dump(mode="json", include=set(ModelInput.model_fields), exclude_defaults=True)


class RunSpec(ModelInput):
    # A surface that names the run's items before the run starts (ChatKit) picks the run id itself.
    run_id: str = Field(default_factory=new_run_id)
    user_id: str
    assistant: str
    request_id: str


class RunRequest(RunSpec):
    """What a surface asks for. `conversation_key=None` means a turn that is not stored."""

    conversation_key: str | None
    # True when the API made the key up just now, so there is nothing to look up.
    new_conversation: bool = False
    new_messages: list[ChatMessage] = Field(default_factory=list)
    conversation_policy: ConversationPolicy = "enqueue"


class CallDecision(BaseModel):
    """A person's decision on a call the run stopped at, as the worker that goes on is given it."""

    model_config = ConfigDict(frozen=True)

    call_id: str
    approved: bool
    reason: str | None = None


class ChatJob(RunSpec):
    """What a worker runs: the spec, rebuilt from the run's row when the worker claims it."""

    conversation_id: int | None
    # The claim's attempt: every write the worker makes for the run is fenced by it.
    attempt: int
    # Set when the run goes on after a pause for approval: what its agent had done, in the engine's form.
    paused_state: dict[str, Any] | None = None
    # ... and what its owner decided about the calls it stopped at.
    decisions: list[CallDecision] = Field(default_factory=list)
    # When it was put in the queue (created, or approved to go on); None on a retry, which the reconciler queued.
    queued_at: datetime | None = None
