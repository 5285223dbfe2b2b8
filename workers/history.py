"""Turning chat messages, stored or sent by the client, into PydanticAI message history."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelRequestPart,
    ModelResponse,
    ModelResponsePart,
    SystemPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)

from domain.chat import ChatMessage


def to_model_messages(messages: Sequence[ChatMessage]) -> list[ModelMessage]:
    """Consecutive request-side messages (system, user, tool results) merge into one request."""
    history: list[ModelMessage] = []
    request_parts: list[ModelRequestPart] = []
    tool_names: dict[str, str] = {}

    def close_request() -> None:
        if request_parts:
            history.append(ModelRequest(parts=list(request_parts)))
            request_parts.clear()

    for message in messages:
        if message.role in ("system", "developer"):
            request_parts.append(SystemPromptPart(content=message.text))
        elif message.role == "user":
            request_parts.append(UserPromptPart(content=message.text))
        elif message.role == "tool":
            call_id = message.tool_call_id or ""
            request_parts.append(
                ToolReturnPart(
                    tool_name=tool_names.get(call_id, message.name or "tool"),
                    content=message.text,
                    tool_call_id=call_id,
                )
            )
        else:
            close_request()
            parts: list[ModelResponsePart] = []
            if message.text:
                parts.append(TextPart(content=message.text))
            for call in message.tool_calls or ():
                tool_names[call.id] = call.function.name
                parts.append(
                    ToolCallPart(tool_name=call.function.name, args=call.function.arguments, tool_call_id=call.id)
                )
            history.append(ModelResponse(parts=parts or [TextPart(content="")]))
    close_request()
    return history
