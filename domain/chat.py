"""Wire schemas of a chat turn: the OpenAI request as clients send it, and the normalised job payload.

Pydantic models live here because this data crosses boundaries: HTTP body in, arq job out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

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


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """`POST /v1/chat/completions`. Unknown fields are ignored, as OpenAI-compatible servers do."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    user: str | dict[str, Any] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None

    @field_validator("n")
    @classmethod
    def _only_one_choice(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise ValueError("only n=1 is supported")
        return value

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return value


class ModelParams(BaseModel):
    """Sampling parameters that reach the provider unchanged."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    parallel_tool_calls: bool | None = None


class ChatJob(BaseModel):
    """What the API hands a worker. The run row in the database is the durable record; this is the how."""

    run_id: str
    user_id: str
    assistant: str
    request_id: str
    conversation_id: int | None
    # When the client sent the whole conversation (Open WebUI does), it is the truth: the worker uses it
    # instead of the stored history. `None` means "use the stored window".
    history: list[ChatMessage] | None = None
    # The client's system and developer messages, put before the stored window when `history` is None.
    system_messages: list[ChatMessage] = Field(default_factory=list)
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    params: ModelParams = Field(default_factory=ModelParams)
