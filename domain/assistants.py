"""The assistants a client can name as `model`. Both sides need the list: the API to validate, the
workers to pick an engine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class AssistantInfo:
    name: str
    description: str
    # Tools the server runs itself; their calls never reach the client as `tool_calls`.
    has_server_tools: bool = False


ASSISTANTS: dict[str, AssistantInfo] = {
    "assistant": AssistantInfo(name="assistant", description="General assistant (PydanticAI)."),
    "todo": AssistantInfo(
        name="todo",
        description="Todo assistant (OpenAI Agents SDK): manages your tasks through its MCP todo tools.",
        has_server_tools=True,
    ),
}
