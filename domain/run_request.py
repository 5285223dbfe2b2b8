"""A turn to run, in one shape: what a surface asks for, what the database records, what a worker gets.

The fields a run is known by and what its model is given are declared once, in `RunSpec`. A surface
fills in a `RunRequest` (the spec plus the conversation and the new turn to store); the API records
it with `domain.runs.accept` and hands the workers a `ChatJob`, which is the spec plus the
conversation's row id, derived from the request rather than declared again.
"""

from __future__ import annotations

import secrets

from pydantic import BaseModel, ConfigDict, Field

from domain.chat import ChatMessage, ModelParams, ToolChoice, ToolDefinition


def new_run_id() -> str:
    return "run_" + secrets.token_hex(12)


class RunSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    # A surface that names the run's items before the run starts (ChatKit) picks the run id itself.
    run_id: str = Field(default_factory=new_run_id)
    user_id: str
    assistant: str
    request_id: str
    # When the client sent the whole conversation (Open WebUI does), it is the truth: the worker uses it
    # instead of the stored history. `None` means "use the stored window".
    history: list[ChatMessage] | None = None
    # The client's system and developer messages, put before the stored window when `history` is None.
    system_messages: list[ChatMessage] = Field(default_factory=list)
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    params: ModelParams = Field(default_factory=ModelParams)


class RunRequest(RunSpec):
    """What a surface asks for. `conversation_key=None` means a turn that is not stored."""

    conversation_key: str | None
    # True when the API made the key up just now, so there is nothing to look up.
    new_conversation: bool = False
    new_messages: list[ChatMessage] = Field(default_factory=list)

    def job(self, *, conversation_id: int | None) -> ChatJob:
        return ChatJob(conversation_id=conversation_id, **{name: getattr(self, name) for name in RunSpec.model_fields})


class ChatJob(RunSpec):
    """What the API hands a worker. The run row in the database is the durable record; this is the how."""

    conversation_id: int | None
