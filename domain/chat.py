"""Wire schemas of a chat turn's messages and model parameters, as every surface and the workers share them.

Pydantic models live here because this data crosses boundaries: HTTP body in, arq job out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Role = Literal["system", "developer", "user", "assistant", "tool"]


def _storable(text: str) -> str:
    # NUL and unpaired surrogates decode from JSON but no database stores them: refuse them here, as
    # bad input, rather than fail later on the INSERT.
    if "\x00" in text:
        raise ValueError("text must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (an unpaired surrogate was found)") from None
    return text


Text = Annotated[str, AfterValidator(_storable)]


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


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "input_text"] = "text"
    text: Text


class ChatMessage(BaseModel):
    """One message of an OpenAI request. Content arrives as a string or as text parts."""

    model_config = ConfigDict(extra="ignore")

    role: Role
    content: Text | list[TextPart] | None = None
    name: Text | None = None
    tool_calls: list[ToolCallSpec] | None = None
    tool_call_id: Text | None = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


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
    """Sampling parameters that reach the provider unchanged."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    parallel_tool_calls: bool | None = None


ToolChoice = Literal["none", "auto", "required"] | dict[str, Any]
