"""What a surface can show of a run: a closed union, rendered by each surface in a `match` closed
with `typing.assert_never`, so a new kind is a type error in CI rather than a failure in production.

These are the run's events as a client should see them, with the relay's decisions already made:
which attempt counts, when a restart matters, and how a stream that cannot go on ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain.errors import RunFailureCode, StreamEndCode
from domain.events import ApprovalRequest, FinishReason, ListedTool, Usage


@dataclass(frozen=True, slots=True, kw_only=True)
class Text:
    text: str
    # The run event it came from: a stream's `id:`, for resuming after it.
    seq: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientToolCall:
    """A piece of a call to a tool the client declared. `call_id` and `name` come with its first piece."""

    index: int
    call_id: str | None
    name: str | None
    arguments: str
    # The run event it came from: a stream's `id:`, for resuming after it.
    seq: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolsOffered:
    """The tools one of the run's servers offers its model. Only the Responses API shows them; they are
    no output, so no surface's restart rule counts them."""

    server: str
    tools: tuple[ListedTool, ...]
    # The run event it came from: a stream's `id:`, for resuming after it.
    seq: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    """A tool the server runs was called."""

    call_id: str
    tool: str
    args: dict[str, Any]
    # The run event it came from: a stream's `id:`, for resuming after it.
    seq: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult:
    call_id: str
    tool: str
    result: Any
    is_error: bool
    # The run event it came from: a stream's `id:`, for resuming after it.
    seq: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Restarted:
    """The run was interrupted after some of its output was shown, and starts over.

    What was shown belongs to an attempt that will not finish. A stream cannot take it back, so it
    ends (the new answer is stored); a surface that shows nothing until the end starts afresh.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class Completed:
    finish_reason: FinishReason
    usage: Usage
    # The answer's token log probabilities (OpenAI's `logprobs.content`), when asked for and given.
    logprobs: list[dict[str, Any]] | None = None
    # The run event it came from: a stream's `id:`, for resuming after it.
    seq: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancelled:
    """Someone stopped the run; what it said until then is its (stored) answer."""

    # The run event it came from: a stream's `id:`, for resuming after it.
    seq: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class AwaitingApproval:
    """The run stopped before tool calls its owner must decide. What it said, the request included
    ("... Reply approve or deny."), came as text before this; it goes on once every call is decided."""

    approvals: tuple[ApprovalRequest, ...]
    # The run event it came from: a stream's `id:`, for resuming after it.
    seq: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    code: RunFailureCode
    message: str
    # The run event it came from: a stream's `id:`, for resuming after it.
    seq: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Detached:
    """The stream stops following a run that goes on (the server is shutting down, say)."""

    code: StreamEndCode
    message: str


RunProgress = (
    Text
    | ClientToolCall
    | ToolsOffered
    | ToolCall
    | ToolResult
    | Restarted
    | Completed
    | Cancelled
    | AwaitingApproval
    | Failed
    | Detached
)

# Messages a stream that cannot go on ends with; the run's answer is still stored.
RESTARTED_MESSAGE = "the run was interrupted and restarted; its answer will be stored in the conversation"
SHUTDOWN_MESSAGE = "the server is shutting down; the answer will be stored in the conversation"
