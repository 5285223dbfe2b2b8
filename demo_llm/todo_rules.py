"""The demo model's todo skills: plain rules that turn everyday phrases into todo tool calls.

When a request offers the todo tools, the demo model reads the user's last message, picks a tool and
its arguments by pattern, and once the tool's result comes back, says what happened in words. It is
deterministic and says it is the demo model; it understands the phrases of the plan ("Add a task to buy
groceries", "What's pending?", "Mark task 3 as complete", "Delete the groceries task"…) and little more.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

TODO_TOOLS = frozenset({"add_task", "list_tasks", "complete_task", "delete_task", "update_task"})
PREFIX = "[demo model] "

HELP = (
    PREFIX + "I can manage your todo list. Try: “Add a task to buy groceries”, “Show me all my tasks”, "
    "“What's pending?”, “Mark task 3 as complete”, “Delete task 2” or “Change task 1 to 'Call mom tonight'”. "
    "Set SWITCHBOARD_LLM_PROVIDER to talk to a real model."
)

_NUMBER = re.compile(r"(?:\btask\s*(?:number|no\.?)?\s*#?|#)\s*(\d+)\b|\b(?:number|no\.?)\s*(\d+)\b", re.I)
_QUOTED = re.compile(r"[\"“”'‘’]([^\"“”]+?)[\"“”'‘’](?:\s|[.!?]|$)")
_UPDATE = re.compile(r"\b(change|update|rename|edit|retitle)\b", re.I)
_DELETE = re.compile(r"\b(delete|remove|cancel|drop|get rid of|erase)\b", re.I)
_COMPLETE = re.compile(r"\b(mark|complete|finish|finished|done|check off|tick off|completed)\b", re.I)
_ASKS_TO_SEE = re.compile(r"^\s*(please\s+)?(what|which|show|list|see|view|display|give me|tell me)\b", re.I)
_LIST = re.compile(r"\b(my (tasks|todos?|list)|pending)\b", re.I)
_ADD = re.compile(r"\b(add|create|remember|remind me|need to|have to|don't forget|new task|put)\b", re.I)
_PENDING = re.compile(r"\b(pending|left|remaining|outstanding|not done|incomplete|still (?:have|need)|to do)\b", re.I)
_COMPLETED = re.compile(r"\b(completed|done|finished)\b", re.I)
_FILLER = re.compile(
    r"\b(please|can you|could you|would you|the|a|an|my|task|tasks|todo|item|called|named|about|one|that|"
    r"as|to|is|it|from|list|i|me|for|with)\b",
    re.I,
)


@dataclass(frozen=True, kw_only=True)
class ToolRequest:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Step:
    """What the demo model answers: tool calls, or text."""

    calls: list[ToolRequest] = field(default_factory=list)
    text: str = ""


@dataclass(frozen=True, kw_only=True)
class _Intent:
    action: str  # add | list | complete | delete | update | help
    number: int | None = None
    name: str | None = None
    title: str | None = None
    status: str = "all"


def offers_todo_tools(body: dict[str, Any]) -> bool:
    names = {(tool.get("function") or {}).get("name") for tool in body.get("tools") or () if isinstance(tool, dict)}
    return names >= TODO_TOOLS


def plan(messages: list[dict[str, Any]]) -> Step:
    """The next step of the conversation: a tool call for a fresh request, words after a result."""
    intent = _intent(_last_user_text(messages))
    results = _trailing_results(messages)
    if not results:
        return _first_step(intent)
    last_tool, last_payload, _ = results[-1]
    if last_tool == "list_tasks" and intent.action in ("complete", "delete", "update") and intent.number is None:
        return _act_on_named(intent, last_payload)
    return Step(text=PREFIX + " ".join(_confirm(tool, payload, error) for tool, payload, error in results))


# ------------------------------------------------------------------ reading the request


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return " ".join(_text_of(message.get("content")).split())
    return ""


def _trailing_results(messages: list[dict[str, Any]]) -> list[tuple[str, Any, bool]]:
    """The tool results the model has not answered yet: (tool, payload or error text, is_error)."""
    names: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls") or ():
            names[str(call.get("id"))] = str((call.get("function") or {}).get("name"))
    results: list[tuple[str, Any, bool]] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        text = _text_of(message.get("content"))
        try:
            payload, error = json.loads(text), False
        except ValueError:
            payload, error = text, True
        results.insert(0, (names.get(str(message.get("tool_call_id")), "tool"), payload, error))
    return results


def _number(text: str) -> int | None:
    match = _NUMBER.search(text)
    if match is None:
        return None
    return int(match.group(1) or match.group(2))


def _quoted(text: str) -> str | None:
    match = _QUOTED.search(text)
    return match.group(1).strip() if match else None


def _name(text: str, verb: re.Pattern[str]) -> str | None:
    """What is left of a request once its verb and filler words are gone, e.g. "groceries"."""
    rest = _FILLER.sub(" ", verb.sub(" ", _NUMBER.sub(" ", text)))
    words = re.findall(r"[\w'-]+", rest)
    return " ".join(words) or None


def _tidy_title(title: str) -> str:
    title = title.strip(" .!?\"'“”‘’")
    title = re.sub(r"\s+(to|on|in)\s+(my|the)\s+(todo\s+)?(list|tasks?)$", "", title, flags=re.I)
    return title[:1].upper() + title[1:]


def _add_title(text: str) -> str | None:
    quoted = _quoted(text)
    if quoted:
        return _tidy_title(quoted)
    patterns = (
        r"\b(?:remember|remind me|need|have|don't forget)\s+to\s+(.+)$",
        r"\btask\s+(?:to|for|called|named|:)\s*(.+)$",
        r"\b(?:add|create|put)\s+(?:a\s+)?(?:new\s+)?(?:task\s+)?(.+)$",
    )
    for pattern in patterns:
        match = re.search(pattern, text, re.I)
        if match:
            inner = re.search(r"\b(?:remember|remind me|need|have)\s+to\s+(.+)$", match.group(1), re.I)
            return _tidy_title((inner or match).group(1))
    return None


def _intent(text: str) -> _Intent:
    number = _number(text)
    if _UPDATE.search(text) and (number is not None or _quoted(text)):
        title = _quoted(text)
        if title is None:
            match = re.search(r"\bto\s+(.+)$", text, re.I)
            title = match.group(1) if match else None
        return _Intent(
            action="update",
            number=number,
            name=None if number is not None else _name(re.split(r"\bto\b", text, maxsplit=1)[0], _UPDATE),
            title=_tidy_title(title) if title else None,
        )
    if _DELETE.search(text):
        return _Intent(action="delete", number=number, name=None if number is not None else _name(text, _DELETE))
    asks_to_see = _ASKS_TO_SEE.search(text) is not None
    if _COMPLETE.search(text) and not asks_to_see:
        return _Intent(action="complete", number=number, name=None if number is not None else _name(text, _COMPLETE))
    if not asks_to_see and _ADD.search(text):
        title = _add_title(text)
        if title:
            return _Intent(action="add", title=title)
    if asks_to_see or _LIST.search(text):
        status = "pending" if _PENDING.search(text) else "completed" if _COMPLETED.search(text) else "all"
        return _Intent(action="list", status=status)
    return _Intent(action="help")


# ------------------------------------------------------------------ answering


def _first_step(intent: _Intent) -> Step:
    if intent.action == "add" and intent.title:
        return Step(calls=[ToolRequest(name="add_task", arguments={"title": intent.title})])
    if intent.action == "list":
        return Step(calls=[ToolRequest(name="list_tasks", arguments={"status": intent.status})])
    if intent.action in ("complete", "delete", "update"):
        if intent.number is not None:
            return Step(calls=[_action_call(intent, intent.number)])
        if intent.name:
            # Named, not numbered: look it up first.
            return Step(calls=[ToolRequest(name="list_tasks", arguments={"status": "all"})])
    return Step(text=HELP)


def _action_call(intent: _Intent, number: int) -> ToolRequest:
    if intent.action == "update":
        return ToolRequest(name="update_task", arguments={"task_id": number, "title": intent.title or ""})
    return ToolRequest(name=f"{intent.action}_task", arguments={"task_id": number})


def _act_on_named(intent: _Intent, listed: Any) -> Step:
    wanted = (intent.name or "").lower().split()
    tasks = listed if isinstance(listed, list) else []
    matches = [
        task
        for task in tasks
        if isinstance(task, dict) and wanted and all(word in str(task.get("title", "")).lower() for word in wanted)
    ]
    if len(matches) == 1:
        return Step(calls=[_action_call(intent, int(matches[0]["id"]))])
    if not matches:
        return Step(text=PREFIX + f"I couldn't find a task matching “{intent.name}”. Which task number do you mean?")
    numbers = ", ".join(f"{task['id']} ({task['title']})" for task in matches)
    return Step(text=PREFIX + f"Several tasks match “{intent.name}”: {numbers}. Which one do you mean?")


def _confirm(tool: str, payload: Any, error: bool) -> str:
    if error:
        return f"That didn't work: {payload}."
    if tool == "list_tasks" and isinstance(payload, list):
        if not payload:
            return "You have no tasks here. Add one with “Add a task to …”."
        lines = [f"{task['id']}. {task['title']}{' (done)' if task.get('completed') else ''}" for task in payload]
        heading = "Here is your task" if len(lines) == 1 else f"Here are your {len(lines)} tasks"
        return f"{heading}: " + "; ".join(lines) + "."
    if isinstance(payload, dict) and "task_id" in payload:
        number, title = payload["task_id"], payload.get("title", "")
        sentences = {
            "created": f"Done! I added task {number}: {title}.",
            "completed": f"Nice work! Task {number} ({title}) is marked as complete.",
            "deleted": f"Deleted task {number}: {title}.",
            "updated": f"Updated task {number}; it now reads: {title}.",
        }
        return sentences.get(str(payload.get("status")), f"Task {number}: {title}.")
    return f"The tool said: {json.dumps(payload)}."
