"""The assistants a client can name as `model`. Both sides need the list: the API to validate, the
workers to pick an agent runner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from domain.settings import LLMProvider

GENERAL_ASSISTANT = "assistant"
TODO_ASSISTANT = "todo"
# The longest message a person may send the todo assistant, through its API or ChatKit.
TODO_MAX_MESSAGE_CHARS = 4000

# The agent framework an assistant runs on.
Engine = Literal["pydantic-ai", "openai-agents"]
ENGINES: tuple[Engine, ...] = ("pydantic-ai", "openai-agents")


@dataclass(frozen=True, kw_only=True)
class AssistantInfo:
    name: str
    description: str
    engine: Engine = "pydantic-ai"
    # The provider its model comes from; None is the configured one (SWITCHBOARD_LLM_PROVIDER).
    provider: LLMProvider | None = None
    # Who may use it; None is everyone.
    users: frozenset[str] | None = None

    def open_to(self, user_id: str) -> bool:
        return self.users is None or user_id in self.users


ASSISTANTS: dict[str, AssistantInfo] = {
    GENERAL_ASSISTANT: AssistantInfo(name=GENERAL_ASSISTANT, description="General assistant (PydanticAI)."),
    TODO_ASSISTANT: AssistantInfo(
        name=TODO_ASSISTANT,
        description="Todo assistant (OpenAI Agents SDK): manages your tasks through its MCP todo tools.",
        engine="openai-agents",
    ),
}
