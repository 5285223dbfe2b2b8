"""`POST /v1/responses` as clients send it. Unknown fields are ignored, as OpenAI-compatible servers do.

Input items are validated loosely here (a list of objects) and turned into the shared chat messages of
`domain/chat.py` in `api/responses/items.py`, which names the item that cannot be used.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class FunctionTool(BaseModel):
    """A tool the client runs: its calls come back as `function_call` output items."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ConversationRef(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: Annotated[str, Field(min_length=1)]


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: dict[str, Any] | None = None


class ReasoningConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # Passed to the provider as `reasoning_effort`.
    effort: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    summary: str | None = None


class ResponseCreateRequest(BaseModel):
    """`POST /v1/responses`."""

    model_config = ConfigDict(extra="ignore")

    model: str
    input: Annotated[str, Field(min_length=1)] | Annotated[list[dict[str, Any]], Field(min_length=1)]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    # Log probabilities of each output token (with `include: ["message.output_text.logprobs"]`).
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    # Caps the calls of built-in tools, which there are none of: only null is accepted (see the route).
    max_tool_calls: Annotated[int, Field(ge=1)] | None = None
    # Hints for the provider's abuse detection and prompt cache: kept and repeated, not acted on.
    safety_identifier: Annotated[str, Field(max_length=64)] | None = None
    prompt_cache_key: Annotated[str, Field(max_length=256)] | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(default=None, max_length=16)
    store: bool = True
    stream: bool = False
    background: bool = False
    previous_response_id: Annotated[str, Field(min_length=1)] | None = None
    conversation: Annotated[str, Field(min_length=1)] | ConversationRef | None = None
    text: TextConfig | None = None
    truncation: Literal["auto", "disabled"] | None = None
    reasoning: ReasoningConfig | None = None
    # Extra output the client asks for (log probabilities, encrypted reasoning): none is produced yet.
    include: list[str] | None = None
    user: str | None = None

    def conversation_id(self) -> str | None:
        if isinstance(self.conversation, ConversationRef):
            return self.conversation.id
        return self.conversation
