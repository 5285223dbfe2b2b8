"""The built-in `demo` model: a real OpenAI Chat Completions endpoint, served in the worker's process.

The agent reaches it through its normal OpenAI client code path over an in-process ASGI transport, so
a newcomer gets a working system with no API key and nothing else to start. Replies are
deterministic and say plainly that they come from the demo model. When a request offers the todo
tools, `demo_llm/todo_rules.py` decides which to call; otherwise it answers as before.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from demo_llm import todo_rules as demo_todo

DEMO_MODEL_NAME = "switchboard-demo"
COMPLETION_ID = "chatcmpl-demo"


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def compose_reply(messages: list[dict[str, Any]]) -> str:
    """A deterministic answer that shows the whole path works, and that it is not a real model."""
    text = " ".join(_last_user_text(messages).split())
    turns = sum(1 for message in messages if message.get("role") == "user")
    if not text:
        return "[demo model] I did not receive a question. Set SWITCHBOARD_LLM_PROVIDER to use a real model."
    if re.fullmatch(r"(?i)(hi|hello|hey)\b.*", text):
        return f"[demo model] Hello! I am Switchboard's built-in demo model. You said: {text}"
    quoted = text if len(text) <= 400 else text[:400] + "…"
    return (
        f'[demo model] You said: "{quoted}". This is turn {turns} of our conversation. '
        "I am a deterministic stand-in; set SWITCHBOARD_LLM_PROVIDER to talk to a real model."
    )


def _tokens(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text)


def _count(text: str) -> int:
    return max(1, len(_tokens(text)))


@dataclass(frozen=True, kw_only=True)
class _Reply:
    """One answer of the demo model, ready to be sent whole or streamed."""

    text: str
    tool_calls: list[dict[str, Any]]
    usage: dict[str, int]
    created: int

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"


async def chat_completions(request: Request) -> Response:
    body = await request.json()
    reply = _reply(body)
    if not body.get("stream"):
        return JSONResponse(_completion(reply))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return StreamingResponse(_stream(reply, include_usage=include_usage), media_type="text/event-stream")


def _reply(body: dict[str, Any]) -> _Reply:
    messages: list[dict[str, Any]] = body.get("messages", [])
    step = _step(body, messages)
    tool_calls = _tool_calls(step.calls, turn=len(messages))
    return _Reply(
        text=step.text,
        tool_calls=tool_calls,
        usage=_usage(messages, step.text, tool_calls),
        created=int(time.time()),
    )


def _step(body: dict[str, Any], messages: list[dict[str, Any]]) -> demo_todo.Step:
    """The todo rules decide when the request offers the todo tools; otherwise the answer is words."""
    if demo_todo.offers_todo_tools(body):
        return demo_todo.plan(messages)
    return demo_todo.Step(text=compose_reply(messages))


def _tool_calls(calls: list[demo_todo.ToolRequest], *, turn: int) -> list[dict[str, Any]]:
    """The calls in the wire's shape, their ids made from the turn and their position in it."""
    return [
        {
            "id": f"call_demo_{turn}_{index}",
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
        }
        for index, call in enumerate(calls)
    ]


def _usage(messages: list[dict[str, Any]], text: str, tool_calls: list[dict[str, Any]]) -> dict[str, int]:
    """Tokens counted as words, each with the spaces after it: enough to show usage travels end to end."""
    completion_tokens = sum(_count(call["function"]["arguments"]) for call in tool_calls) or _count(text)
    prompt_tokens = sum(_count(json.dumps(message.get("content", ""))) for message in messages)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _envelope(reply: _Reply, kind: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": COMPLETION_ID,
        "object": kind,
        "created": reply.created,
        "model": DEMO_MODEL_NAME,
        "choices": choices,
        **extra,
    }


def _completion(reply: _Reply) -> dict[str, Any]:
    """The whole answer as one `chat.completion`."""
    message: dict[str, Any] = {"role": "assistant", "content": None if reply.tool_calls else reply.text}
    if reply.tool_calls:
        message["tool_calls"] = reply.tool_calls
    choice = {"index": 0, "message": message, "finish_reason": reply.finish_reason}
    return _envelope(reply, "chat.completion", [choice], usage=reply.usage)


def _deltas(reply: _Reply) -> Iterator[dict[str, Any]]:
    """The assistant's message piece by piece: its tool calls one by one, or its text token by token."""
    if reply.tool_calls:
        yield {"role": "assistant", "content": None}
        for index, call in enumerate(reply.tool_calls):
            yield {"tool_calls": [{"index": index, **call}]}
        return
    yield {"role": "assistant", "content": ""}
    for token in _tokens(reply.text):
        yield {"content": token}


def _chunk(reply: _Reply, choices: list[dict[str, Any]], **extra: Any) -> bytes:
    payload = _envelope(reply, "chat.completion.chunk", choices, **extra)
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


async def _stream(reply: _Reply, *, include_usage: bool) -> AsyncIterator[bytes]:
    """The answer as server-sent `chat.completion.chunk`s, the usage last when asked for, then [DONE]."""
    for delta in _deltas(reply):
        yield _chunk(reply, [{"index": 0, "delta": delta, "finish_reason": None}])
    yield _chunk(reply, [{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}])
    if include_usage:
        yield _chunk(reply, [], usage=reply.usage)
    yield b"data: [DONE]\n\n"


def create_demo_app() -> Starlette:
    return Starlette(routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"])])
