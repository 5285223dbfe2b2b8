"""The assistants a client can name as `model`. Both sides need the list: the API to validate, the
workers to pick an agent runner."""

from __future__ import annotations

from dataclasses import dataclass

GENERAL_ASSISTANT = "assistant"
TODO_ASSISTANT = "todo"
# The longest message a person may send the todo assistant, through its API or ChatKit.
TODO_MAX_MESSAGE_CHARS = 4000


@dataclass(frozen=True, kw_only=True)
class AssistantInfo:
    name: str
    description: str


ASSISTANTS: dict[str, AssistantInfo] = {
    GENERAL_ASSISTANT: AssistantInfo(name=GENERAL_ASSISTANT, description="General assistant (PydanticAI)."),
    TODO_ASSISTANT: AssistantInfo(
        name=TODO_ASSISTANT,
        description="Todo assistant (OpenAI Agents SDK): manages your tasks through its MCP todo tools.",
    ),
}
