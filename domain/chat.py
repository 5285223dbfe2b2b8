"""Wire schemas of a chat turn's messages and model parameters, as every surface and the workers share them.

Pydantic models live here because this data crosses boundaries: HTTP body in, arq job out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from domain.content import MediaPart, MessageContent, TextPart
from domain.text import StorableText

Role = Literal["system", "developer", "user", "assistant", "tool"]


# Every string of a message is stored with the conversation: refused as bad input if it cannot be.
Text = StorableText


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: Text
    arguments: Text = "{}"


class ToolCallSpec(BaseModel):
    """A call to a client-declared function, as it appears in an assistant message."""

    model_config = ConfigDict(extra="ignore")

    id: Text
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    """One message of an OpenAI request. Content arrives as a string or as parts (`domain/content.py`):
    text in any message, images, audio and files in a user's."""

    model_config = ConfigDict(extra="ignore")

    role: Role
    content: MessageContent | None = None
    name: Text | None = None
    tool_calls: list[ToolCallSpec] | None = None
    tool_call_id: Text | None = None

    @model_validator(mode="after")
    def _media_from_users_only(self) -> ChatMessage:
        if self.role != "user" and self.media_parts:
            raise ValueError(f"only user messages may have {self.media_parts[0].type} parts")
        return self

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    @property
    def media_parts(self) -> list[MediaPart]:
        """The content's images, audio and files."""
        if not isinstance(self.content, list):
            return []
        return [part for part in self.content if not isinstance(part, TextPart)]


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class ToolDefinition(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"] = "function"
    function: FunctionDefinition


class ModelParams(BaseModel):
    """Sampling parameters that reach the provider unchanged, each under the name the client gave it."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: list[str] | None = None
    parallel_tool_calls: bool | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, int | float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    reasoning_effort: str | None = None
    # `{"type": "json_object"}` or `{"type": "json_schema", "json_schema": {...}}`, as the client sent it.
    response_format: dict[str, Any] | None = None


ToolChoice = Literal["none", "auto", "required"] | dict[str, Any]
