"""ChatKit's thread items made from our history, with the item ids both the stream and the store use.

A ChatKit item id names the row it stands for, so the item a stream shows is the item a reload shows:

- a user message is `{run_id}-in0`, the `item_id` of the run's stored input (as `domain/runs.py`
  names it), which is why the run id is chosen before the run starts;
- the assistant's answer is `{run_id}-out`, the `item_id` under which the worker stores it;
- a server-side tool call is `{run_id}-tool-{call_id}`: a task item made from its `tool_calls` row.

Only the ChatKit types are imported here, never `chatkit.server` (which pulls in the Agents SDK).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    CustomTask,
    InferenceOptions,
    TaskItem,
    ThreadItem,
    UserMessageContent,
    UserMessageItem,
    UserMessageTextContent,
)

from domain.threads import Entry, MessageEntry, ToolCallEntry
from domain.tool_calls import MAX_CALL_ID_CHARS

_RUN_ID = r"run_[0-9a-f]{24}"
_INPUT = re.compile(rf"^({_RUN_ID})-in0$")
_OUTPUT = re.compile(rf"^({_RUN_ID})-out$")
_TOOL = re.compile(rf"^({_RUN_ID})-tool-(.+)$", re.S)
MAX_SHOWN_RESULT_CHARS = 2000


def input_item_id(run_id: str) -> str:
    return f"{run_id}-in0"


def output_item_id(run_id: str) -> str:
    return f"{run_id}-out"


def tool_item_id(run_id: str, call_id: str) -> str:
    # Cut like the stored call id, so a streamed call and its row have one name.
    return f"{run_id}-tool-{call_id[:MAX_CALL_ID_CHARS]}"


def run_of_input(item_id: str) -> str | None:
    match = _INPUT.match(item_id)
    return match.group(1) if match else None


def run_of_output(item_id: str) -> str | None:
    match = _OUTPUT.match(item_id)
    return match.group(1) if match else None


def tool_of(item_id: str) -> tuple[str, str] | None:
    """(run id, call id) of a tool call's item id."""
    match = _TOOL.match(item_id)
    return (match.group(1), match.group(2)) if match else None


def user_text(content: Sequence[UserMessageContent], quoted_text: str | None = None) -> str:
    """What the model is given for a user message: its text and tags, after any quoted text."""
    text = "".join(part.text for part in content)
    if quoted_text:
        quoted = "\n".join(f"> {line}" for line in quoted_text.splitlines())
        return f"{quoted}\n\n{text}"
    return text


# ------------------------------------------------------------------ tool calls


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= MAX_SHOWN_RESULT_CHARS else text[:MAX_SHOWN_RESULT_CHARS] + "…"


def tool_title(tool: str, arguments: dict[str, Any]) -> str:
    shown = ", ".join(
        f"{name}={json.dumps(value, ensure_ascii=False)}" for name, value in arguments.items() if value is not None
    )
    return f"{tool}({shown})"


def tool_task(
    tool: str, arguments: dict[str, Any], *, done: bool, result: Any = None, error: str | None = None
) -> CustomTask:
    """A tool call as a task: loading while it runs, then what it returned or how it failed."""
    if not done:
        return CustomTask(title=tool_title(tool, arguments), icon="bolt", status_indicator="loading")
    return CustomTask(
        title=tool_title(tool, arguments),
        icon="circle-question" if error is not None else "check-circle",
        content=f"failed: {error}" if error is not None else _shown(result),
        status_indicator="complete",
    )


def stored_error(result: Any) -> str:
    """The message of a failed call as the `tool_calls` row keeps it (`{"error": message}`)."""
    if isinstance(result, dict) and "error" in result:
        return str(result["error"])
    return str(result)


# ------------------------------------------------------------------ items from history


def item_of(entry: Entry, *, thread_id: str) -> ThreadItem:
    if isinstance(entry, ToolCallEntry):
        return _tool_item(entry, thread_id=thread_id)
    return _message_item(entry, thread_id=thread_id)


def _message_item(entry: MessageEntry, *, thread_id: str) -> ThreadItem:
    if entry.role == "user":
        return UserMessageItem(
            id=entry.item_id,
            thread_id=thread_id,
            created_at=entry.created_at,
            content=[UserMessageTextContent(text=entry.content)],
            inference_options=InferenceOptions(),
        )
    return assistant_item(entry.item_id, thread_id=thread_id, created_at=entry.created_at, text=entry.content)


def assistant_item(item_id: str, *, thread_id: str, created_at: datetime, text: str | None) -> AssistantMessageItem:
    content = [] if text is None else [AssistantMessageContent(text=text)]
    return AssistantMessageItem(id=item_id, thread_id=thread_id, created_at=created_at, content=content)


def _tool_item(entry: ToolCallEntry, *, thread_id: str) -> TaskItem:
    error = stored_error(entry.result) if entry.is_error else None
    return TaskItem(
        id=tool_item_id(entry.run_id, entry.call_id),
        thread_id=thread_id,
        created_at=entry.created_at,
        task=tool_task(entry.tool_name, entry.arguments, done=True, result=entry.result, error=error),
    )
