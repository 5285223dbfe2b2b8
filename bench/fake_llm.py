"""The tests' fake LLM (``tests.fake_llm``), plus one directive for the benchmark's slow-reader part.

    python -m bench.fake_llm --port 0

Everything is ``tests.fake_llm`` as it is, except a last user message holding ``[[bulk:BYTES:CHUNK]]``:
the reply is BYTES characters of text (``"bulk "`` repeated) streamed in chunks of CHUNK characters.
The fake's own ``[[tokens:N]]`` streams 4-character chunks, so an 8 MB reply would be two million
chunks, minutes of agent work; 8 KB chunks make it a thousand, about a second. Other directives
still apply (``[[delay:S]]``, ``[[tokendelay:S]]``...).
"""

from __future__ import annotations

import re
from typing import Any

from tests import fake_llm

_BULK = re.compile(r"\[\[bulk:(\d+):(\d+)\]\]")
_WORD = "bulk "

_from_body = fake_llm.Script.from_body.__func__  # type: ignore[attr-defined]


def _bulk_from_body(cls: type[fake_llm.Script], body: dict[str, Any]) -> fake_llm.Script:
    script: fake_llm.Script = _from_body(cls, body)
    messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
    if not messages or messages[-1].get("role") != "user" or script.tool_calls:
        return script
    match = _BULK.search(fake_llm._text_of(messages[-1].get("content")))
    if match is None:
        return script
    size, chunk = int(match.group(1)), max(1, int(match.group(2)))
    text = (_WORD * (size // len(_WORD) + 1))[:size]
    script.text = text
    script.pieces = [text[i : i + chunk] for i in range(0, size, chunk)]
    return script


fake_llm.Script.from_body = classmethod(_bulk_from_body)  # type: ignore[assignment]


if __name__ == "__main__":
    fake_llm.main()
