"""The one event protocol that crosses from workers to the API.

Every event names its run, its place in the run (`seq`, strictly increasing across attempts) and the
attempt that produced it. Workers never set `seq` themselves: the publish script assigns it in Redis,
so that the replay log and the live channel agree on one order even if two attempts overlap.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from domain.errors import RunFailureCode


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    attempt: int
    seq: int = 0


class RunStarted(_Event):
    type: Literal["run.started"] = "run.started"


class TextDelta(_Event):
    type: Literal["text.delta"] = "text.delta"
    text: str


class ClientToolCallDelta(_Event):
    """A piece of a call to a client-declared tool. `call_id` and `name` come only with its first piece."""

    type: Literal["client_tool.delta"] = "client_tool.delta"
    index: int
    call_id: str | None = None
    name: str | None = None
    arguments: str = ""


class ToolCalled(_Event):
    """A server-side tool call began. Clients of the OpenAI surface never see these as `tool_calls`."""

    type: Literal["tool.call"] = "tool.call"
    call_id: str
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)


class ListedTool(BaseModel):
    """A tool a server offers the run's model, as MCP describes it."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=dict)
    annotations: dict[str, Any] | None = None


class ToolsListed(_Event):
    """The tools one of the run's tool servers offers its model (those its policy lets the model see),
    announced once per attempt, before the model first sees them. Only the Responses API shows it
    (an `mcp_list_tools` item); it is no output, so a restart after it is no news."""

    type: Literal["tools.listed"] = "tools.listed"
    server: str
    tools: list[ListedTool]


class ToolReturned(_Event):
    type: Literal["tool.result"] = "tool.result"
    call_id: str
    tool: str
    result: Any = None
    is_error: bool = False


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


FinishReason = Literal["stop", "length", "tool_calls"]


class RunCompleted(_Event):
    type: Literal["run.completed"] = "run.completed"
    finish_reason: FinishReason = "stop"
    usage: Usage = Field(default_factory=Usage)
    # The answer's token log probabilities, in OpenAI's shape, when the client asked and the provider told.
    logprobs: list[dict[str, Any]] | None = None


class RunFailed(_Event):
    type: Literal["run.failed"] = "run.failed"
    code: RunFailureCode
    message: str


class RunCancelled(_Event):
    """Someone stopped the run. Its partial answer, if any, is stored."""

    type: Literal["run.cancelled"] = "run.cancelled"


class ApprovalRequest(BaseModel):
    """A tool call the run stopped at, as its owner is asked to decide it."""

    model_config = ConfigDict(frozen=True)

    call_id: str
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    arguments_hash: str


class RunAwaitingApproval(_Event):
    """The run stopped before tool calls that need its owner's yes; it goes on, in a new attempt, once
    every call is decided (see domain/approvals.py). For a stream, this is where it ends."""

    type: Literal["run.awaiting_approval"] = "run.awaiting_approval"
    approvals: list[ApprovalRequest]


TerminalEvent = RunCompleted | RunFailed | RunCancelled | RunAwaitingApproval

RunEvent = Annotated[
    RunStarted
    | TextDelta
    | ClientToolCallDelta
    | ToolsListed
    | ToolCalled
    | ToolReturned
    | RunCompleted
    | RunFailed
    | RunCancelled
    | RunAwaitingApproval,
    Field(discriminator="type"),
]

_adapter: TypeAdapter[RunEvent] = TypeAdapter(RunEvent)
_list_adapter: TypeAdapter[list[RunEvent]] = TypeAdapter(list[RunEvent])


def decode_event(raw: bytes | str) -> RunEvent:
    return _adapter.validate_json(raw)


def decode_events(raw: bytes | str) -> list[RunEvent]:
    """A JSON array of events, as a run's burst is published."""
    return _list_adapter.validate_json(raw)


def encode_event(event: RunEvent) -> str:
    """Serialise without `seq`: the publish script prepends the one Redis assigns."""
    return event.model_dump_json(exclude={"seq"})
