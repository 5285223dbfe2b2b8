"""Which MCP tools an assistant from the assistants file may run: decided here, once, for every engine.

Each tool of an assistant's MCP servers is `allow` (offered and run), `approve` (offered; a call waits for
a person's yes) or `deny` (never offered to the model). An explicit `"server.tool"` line of the
assistant's `[tools]` table decides; otherwise a tool whose MCP annotations say `readOnlyHint: true` is
allowed, and any other tool gets the table's `default`, which is `approve` when the file sets none: a
tool that may change the world runs only after a person said yes, unless the file says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

ToolPolicy = Literal["allow", "approve", "deny"]
TOOL_POLICIES: tuple[ToolPolicy, ...] = ("allow", "approve", "deny")
DEFAULT_TOOL_POLICY: ToolPolicy = "approve"


@dataclass(frozen=True, kw_only=True)
class ToolRules:
    """An assistant's `[tools]` table."""

    default: ToolPolicy = DEFAULT_TOOL_POLICY
    # "server.tool" -> its policy.
    per_tool: Mapping[str, ToolPolicy] = field(default_factory=dict)


def qualified_tool_name(server: str, tool: str) -> str:
    """A tool as the file, the run's events and people name it: `server.tool`."""
    return f"{server}.{tool}"


def decide_tool_policy(*, rules: ToolRules, server: str, tool: str, read_only_hint: bool | None) -> ToolPolicy:
    """The policy of one tool of one of an assistant's MCP servers.

    `read_only_hint` is the tool's `annotations.readOnlyHint` as its server lists it (None when absent).
    """
    explicit = rules.per_tool.get(qualified_tool_name(server, tool))
    if explicit is not None:
        return explicit
    if read_only_hint is True:
        return "allow"
    return rules.default


@dataclass(frozen=True, kw_only=True)
class PendingApproval:
    """A call the model made to a tool whose policy is `approve`, not run."""

    # The model's own id of the call.
    call_id: str
    # `server.tool`.
    tool: str
    arguments: dict[str, Any]
