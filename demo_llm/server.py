"""The built-in `demo` model: a real OpenAI Chat Completions endpoint, served in the worker's process.

The agent reaches it through its normal OpenAI client code path over an in-process ASGI transport, so
a newcomer gets a working system with no API key and nothing else to start. Replies are
deterministic and say plainly that they come from the demo model. When a request offers the todo
tools, `demo_llm/todo_rules.py` decides which to call; otherwise it answers as before. It says that it
cannot see images, hear audio or read files when it is sent them; asked for structured output
(`response_format`), it answers JSON that validates against the schema; asked for `logprobs`, it gives
each token a log probability of 0 (it is certain of every word).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from demo_llm import todo_rules as demo_todo
from demo_llm.schema_instance import minimal_instance

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


# What the demo model cannot take in, by the content part that carries it.
_MEDIA_WORDS = {"image_url": "image", "input_audio": "audio clip", "file": "file"}


def _media_note(messages: list[dict[str, Any]]) -> str | None:
    """What the last user message carried beyond text, which the demo model cannot take in."""
    user: dict[str, Any] = next((message for message in reversed(messages) if message.get("role") == "user"), {})
    content = user.get("content")
    parts = content if isinstance(content, list) else []
    counts = Counter(_MEDIA_WORDS[kind] for part in parts if (kind := part.get("type")) in _MEDIA_WORDS)
    if not counts:
        return None
    sent = ", ".join(f"{count} {word}{'s' if count > 1 else ''}" for word, count in counts.items())
    return (
        f"I cannot see images, hear audio or read files (you sent {sent}): I am a deterministic stand-in. "
        "Set SWITCHBOARD_LLM_PROVIDER to a model that can."
    )


def compose_reply(messages: list[dict[str, Any]]) -> str:
    """A deterministic answer that shows the whole path works, and that it is not a real model."""
    text = " ".join(_last_user_text(messages).split())
    turns = sum(1 for message in messages if message.get("role") == "user")
    note = _media_note(messages)
    if note is not None:
        quoted = text if len(text) <= 400 else text[:400] + "…"
        return f"[demo model] {note}" + (f' You said: "{quoted}".' if text else "")
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
    # Alternatives per token when the request asked for `logprobs` (0 and up), else None.
    top_logprobs: int | None = None

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
        top_logprobs=int(body.get("top_logprobs") or 0) if body.get("logprobs") else None,
    )


def _step(body: dict[str, Any], messages: list[dict[str, Any]]) -> demo_todo.Step:
    """The todo rules decide when the request offers the todo tools; otherwise the answer is words, or
    JSON when the request asks for it."""
    if demo_todo.offers_todo_tools(body):
        return demo_todo.plan(messages)
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return demo_todo.Step(text=json.dumps(minimal_instance(schema)))
    if response_format.get("type") == "json_object":
        return demo_todo.Step(text=json.dumps({"reply": compose_reply(messages)}))
    return demo_todo.Step(text=compose_reply(messages))


def _logprobs(reply: _Reply, tokens: list[str]) -> dict[str, Any] | None:
    """Every token certain (log probability 0), in OpenAI's shape, when the request asked."""
    if reply.top_logprobs is None:
        return None

    def entry(token: str) -> dict[str, Any]:
        return {"token": token, "logprob": 0.0, "bytes": list(token.encode())}

    content = [{**entry(token), "top_logprobs": [entry(token)][: reply.top_logprobs]} for token in tokens]
    return {"content": content, "refusal": None}


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
    logprobs = None if reply.tool_calls else _logprobs(reply, _tokens(reply.text))
    choice = {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": reply.finish_reason}
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
        logprobs = _logprobs(reply, [delta["content"]]) if delta.get("content") else None
        yield _chunk(reply, [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": None}])
    yield _chunk(reply, [{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}])
    if include_usage:
        yield _chunk(reply, [], usage=reply.usage)
    yield b"data: [DONE]\n\n"


def create_demo_app() -> Starlette:
    return Starlette(routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"])])
