"""A Responses `input` as the shared chat messages of `domain/chat.py`.

Messages (text and image parts), `function_call` and `function_call_output` items are what a turn can
carry; anything else is refused with a 400 that names the item, never dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from domain.chat import ChatMessage, FunctionCall, ToolCallSpec
from domain.errors import InvalidRequest
from domain.run_items import InputMessage

_ROLES = ("user", "system", "developer", "assistant")


@dataclass(frozen=True, kw_only=True)
class ApprovalAnswer:
    """An `mcp_approval_response` item: the decision on the call its `approval_request_id` names."""

    call_id: str
    approve: bool
    reason: str | None


def approval_answers(raw: str | list[dict[str, Any]]) -> list[ApprovalAnswer]:
    """The input's approval answers; an input that has any must have nothing else."""
    if isinstance(raw, str):
        return []
    answers = [item for item in raw if item.get("type") == "mcp_approval_response"]
    if not answers:
        return []
    if len(answers) != len(raw):
        raise InvalidRequest("mcp_approval_response items cannot be mixed with other input items", param="input")
    found: list[ApprovalAnswer] = []
    for index, item in enumerate(raw):
        call_id, approve, reason = item.get("approval_request_id"), item.get("approve"), item.get("reason")
        if not isinstance(call_id, str) or not call_id or not isinstance(approve, bool):
            raise InvalidRequest(
                f"input[{index}]: an mcp_approval_response needs approval_request_id and approve (a boolean)",
                param=f"input[{index}]",
            )
        found.append(
            ApprovalAnswer(call_id=call_id, approve=approve, reason=reason if isinstance(reason, str) else None)
        )
    return found


def input_messages(raw: str | list[dict[str, Any]]) -> list[ChatMessage]:
    if isinstance(raw, str):
        return [ChatMessage(role="user", content=raw)]
    messages: list[ChatMessage] = []
    for index, item in enumerate(raw):
        param = f"input[{index}]"
        kind = item.get("type", "message" if "role" in item else None)
        try:
            if kind == "message":
                messages.append(_message(item, param=param))
            elif kind == "function_call":
                _add_call(messages, item)
            elif kind == "function_call_output":
                messages.append(
                    ChatMessage(role="tool", tool_call_id=item.get("call_id"), content=_output_text(item.get("output")))
                )
            else:
                raise InvalidRequest(f"{param}: input items of type {kind!r} are not supported", param=param)
        except ValidationError as exc:
            problem = exc.errors()[0]
            raise InvalidRequest(f"{param}: {problem['msg']}", param=param) from exc
    return messages


def _message(item: dict[str, Any], *, param: str) -> ChatMessage:
    role = item.get("role")
    if role not in _ROLES:
        raise InvalidRequest(f"{param}.role must be one of {', '.join(_ROLES)}", param=f"{param}.role")
    content = item.get("content")
    if isinstance(content, str):
        return ChatMessage(role=role, content=content)
    if not isinstance(content, list):
        raise InvalidRequest(f"{param}.content must be a string or a list of parts", param=f"{param}.content")
    return ChatMessage(
        role=role, content=[_part(part, param=f"{param}.content[{i}]") for i, part in enumerate(content)]
    )


def _part(part: Any, *, param: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        return {"type": "image_url", "image_url": {"url": part["image_url"], "detail": part.get("detail")}}
    raise InvalidRequest(f"{param}: parts of type {kind!r} are not supported here", param=param)


def _add_call(messages: list[ChatMessage], item: dict[str, Any]) -> None:
    """Function calls the model made: consecutive ones belong to one assistant message."""
    call = ToolCallSpec(
        id=item.get("call_id"), function=FunctionCall(name=item.get("name"), arguments=item.get("arguments") or "{}")
    )
    last = messages[-1] if messages else None
    if last is not None and last.role == "assistant" and last.tool_calls is not None:
        messages[-1] = last.model_copy(update={"tool_calls": [*last.tool_calls, call]})
    else:
        messages.append(ChatMessage(role="assistant", content=None, tool_calls=[call]))


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(part.get("text", "") for part in output if isinstance(part, dict))
    return json.dumps(output)


def input_item(message: InputMessage) -> dict[str, Any]:
    """A stored input message as the Responses input item it was (or would have been)."""
    if message.role == "tool":
        return {
            "id": message.item_id,
            "type": "function_call_output",
            "call_id": message.tool_call_id or "",
            "output": message.content,
            "status": "completed",
        }
    content = message.parts if message.parts else [{"type": "text", "text": message.content}]
    return {
        "id": message.item_id,
        "type": "message",
        "role": message.role,
        "status": "completed",
        "content": [_input_part(part, role=message.role) for part in content],
    }


def input_item_of_chat(message: ChatMessage, *, item_id: str) -> dict[str, Any]:
    parts = message.content if isinstance(message.content, list) else [{"type": "text", "text": message.text}]
    stored = InputMessage(
        item_id=item_id,
        role=message.role,
        content=message.text,
        parts=[part if isinstance(part, dict) else part.model_dump(mode="json") for part in parts],
        tool_calls=None,
        tool_call_id=message.tool_call_id,
    )
    return input_item(stored)


def _input_part(part: dict[str, Any], *, role: str) -> dict[str, Any]:
    if part.get("type") == "image_url":
        image = part.get("image_url") or {}
        return {"type": "input_image", "image_url": image.get("url"), "detail": image.get("detail") or "auto"}
    if part.get("type") in ("text", "input_text"):
        return {"type": "output_text" if role == "assistant" else "input_text", "text": part.get("text", "")}
    return {"type": "input_text", "text": ""}
