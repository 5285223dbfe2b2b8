"""Run events rendered as OpenAI `chat.completion.chunk` objects, with OpenAI's ordering rules.

The role comes once, in the first delta; `finish_reason` stays null until the one final chunk; each
client tool call's `id`, `type` and `name` come only in its first delta.
"""

from __future__ import annotations

import json
from typing import Any

from api.relay.progress import ClientToolCall
from domain.events import FinishReason, Usage


def usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def logprobs_body(logprobs: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """A choice's `logprobs`: null unless the client asked for them and the provider gave them."""
    return None if logprobs is None else {"content": logprobs, "refusal": None}


class ChunkWriter:
    def __init__(self, *, completion_id: str, created: int, model: str, role_sent: bool = False) -> None:
        # The fixed part of every chunk is rendered once; each chunk only adds its choices.
        self._prefix = json.dumps(
            {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
        )[:-1]
        # A resumed stream continues one whose first delta, with the role, the client already has.
        self._role_sent = role_sent

    def _chunk(
        self,
        delta: dict[str, Any],
        finish_reason: FinishReason | None = None,
        logprobs: list[dict[str, Any]] | None = None,
    ) -> str:
        if not self._role_sent:
            self._role_sent = True
            delta = {"role": "assistant", **delta}
        choice = {"index": 0, "delta": delta, "logprobs": logprobs_body(logprobs), "finish_reason": finish_reason}
        choices = json.dumps([choice])
        return f'{self._prefix}, "choices": {choices}}}'

    def text(self, text: str) -> str:
        return self._chunk({"content": text})

    def tool_call(self, event: ClientToolCall) -> str:
        call: dict[str, Any] = {"index": event.index}
        if event.call_id is not None:
            call["id"] = event.call_id
            call["type"] = "function"
            call["function"] = {"name": event.name, "arguments": event.arguments}
        else:
            call["function"] = {"arguments": event.arguments}
        return self._chunk({"tool_calls": [call]})

    def finish(self, finish_reason: FinishReason, logprobs: list[dict[str, Any]] | None = None) -> str:
        """The last chunk with a choice. The answer's log probabilities, when there are any, come with it:
        the provider's are known once its stream has ended, and clients join every chunk's."""
        return self._chunk({}, finish_reason, logprobs)

    def usage(self, usage: Usage) -> str:
        return f'{self._prefix}, "choices": [], "usage": {json.dumps(usage_body(usage))}}}'
