"""Turning chat messages, and a run's recorded tool calls, into OpenAI Agents SDK input items."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agents import TResponseInputItem

from domain.chat import ChatMessage
from domain.tool_calls import RecordedCall, recorded_call_id
from todo.server import result_text


def to_input_items(messages: Sequence[ChatMessage]) -> list[TResponseInputItem]:
    items: list[Any] = []
    for message in messages:
        if message.role in ("system", "developer"):
            items.append({"role": message.role, "content": message.text})
        elif message.role == "user":
            items.append({"role": "user", "content": message.text})
        elif message.role == "tool":
            items.append(
                {"type": "function_call_output", "call_id": message.tool_call_id or "", "output": message.text}
            )
        else:
            if message.text or not message.tool_calls:
                items.append({"role": "assistant", "content": message.text})
            for call in message.tool_calls or ():
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call.id,
                        "name": call.function.name,
                        "arguments": call.function.arguments,
                    }
                )
    return items


def recorded_items(run_id: str, calls: Sequence[RecordedCall]) -> list[TResponseInputItem]:
    """An earlier attempt's calls and their results, exactly as the model saw them then."""
    items: list[Any] = []
    for call in calls:
        call_id = recorded_call_id(run_id, call.call_id, call.ordinal)
        arguments = json.dumps(call.arguments)
        items.append({"type": "function_call", "call_id": call_id, "name": call.tool_name, "arguments": arguments})
        items.append({"type": "function_call_output", "call_id": call_id, "output": result_text(call)})
    return items
