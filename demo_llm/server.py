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
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from demo_llm import todo_rules as demo_todo

DEMO_MODEL_NAME = "switchboard-demo"


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


async def chat_completions(request: Request) -> Response:
    body = await request.json()
    messages: list[dict[str, Any]] = body.get("messages", [])
    calls: list[demo_todo.ToolRequest] = []
    if demo_todo.offers_todo_tools(body):
        step = demo_todo.plan(messages)
        reply, calls = step.text, step.calls
    else:
        reply = compose_reply(messages)
    tool_calls: list[dict[str, Any]] = [
        {
            "id": f"call_demo_{len(messages)}_{index}",
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
        }
        for index, call in enumerate(calls)
    ]
    completion_tokens = sum(_count(call["function"]["arguments"]) for call in tool_calls) or _count(reply)
    prompt_tokens = sum(_count(json.dumps(message.get("content", ""))) for message in messages)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    finish_reason = "tool_calls" if tool_calls else "stop"
    completion_id = "chatcmpl-demo"
    created = int(time.time())
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": None if tool_calls else reply}
        if tool_calls:
            message["tool_calls"] = tool_calls
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": DEMO_MODEL_NAME,
                "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
                "usage": usage,
            }
        )

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": DEMO_MODEL_NAME,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    async def stream() -> AsyncIterator[bytes]:
        if tool_calls:
            yield chunk({"role": "assistant", "content": None})
            for index, call in enumerate(tool_calls):
                yield chunk({"tool_calls": [{"index": index, **call}]})
        else:
            yield chunk({"role": "assistant", "content": ""})
            for token in _tokens(reply):
                yield chunk({"content": token})
        yield chunk({}, finish_reason)
        if (body.get("stream_options") or {}).get("include_usage"):
            final = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": DEMO_MODEL_NAME,
                "choices": [],
                "usage": usage,
            }
            yield b"data: " + json.dumps(final).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


def create_demo_app() -> Starlette:
    return Starlette(routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"])])
