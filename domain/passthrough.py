"""What a turn may ask of the model beyond text, decided once for the API and the workers.

Whatever a client sends is passed to the model, or refused up front with a 400 that names it: a worker
that cannot pass something on must never be handed it, because it would have to drop it in silence.
OpenAI-protocol providers (`openai`, `ollama`, `demo`) take every OpenAI field as sent; Anthropic's API
has no seed, penalties, logit bias, log probabilities or OpenAI `response_format`; the todo assistant
runs its own tools and answers in words, so it takes no media, no response format and no logprobs, and
neither does any other assistant on its engine, the OpenAI Agents SDK (whose runners give the model the
messages' text and nothing else).
"""

from __future__ import annotations

from collections.abc import Sequence

from domain.assistants import ASSISTANTS, Engine
from domain.chat import ChatMessage, ModelParams
from domain.content import AudioPart, FilePart, TextPart
from domain.errors import InvalidRequest
from domain.settings import LLMProvider

OPENAI_PROTOCOL_PROVIDERS: tuple[LLMProvider, ...] = ("openai", "ollama", "demo")
# Fields only an OpenAI-protocol provider takes; each reaches it under its own name.
OPENAI_FIELDS = (
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "reasoning_effort",
    "response_format",
)
# Of those, what the todo assistant passes to its model (the rest would change what it does).
TODO_FIELDS = ("seed", "presence_penalty", "frequency_penalty", "logit_bias", "reasoning_effort")


def check_passable(
    *,
    provider: LLMProvider,
    assistant: str,
    params: ModelParams,
    messages: Sequence[ChatMessage],
    engine: Engine | None = None,
) -> None:
    """Refuse (`InvalidRequest`, naming the field or part) what this assistant and provider cannot be given.

    `engine` is the assistant's; a built-in assistant's is known without it."""
    given = [name for name in OPENAI_FIELDS if getattr(params, name) is not None]
    builtin = ASSISTANTS.get(assistant)
    agents_sdk = (engine or (builtin.engine if builtin else "pydantic-ai")) == "openai-agents"
    if agents_sdk:
        refused = [name for name in given if name not in TODO_FIELDS]
        if refused:
            raise InvalidRequest(f"the {assistant} assistant cannot take {refused[0]}", param=refused[0])
    elif given and provider not in OPENAI_PROTOCOL_PROVIDERS:
        raise InvalidRequest(f"{given[0]} cannot be passed to the {provider} provider", param=given[0])
    for index, message in enumerate(messages):
        for part_index, part in enumerate(message.content if isinstance(message.content, list) else ()):
            where = f"messages.{index}.content.{part_index}"
            if isinstance(part, TextPart):
                continue
            if agents_sdk:
                raise InvalidRequest(f"{where}: the {assistant} assistant takes text only", param=where)
            if isinstance(part, AudioPart) and provider not in OPENAI_PROTOCOL_PROVIDERS:
                raise InvalidRequest(f"{where}: audio cannot be passed to the {provider} provider", param=where)
            if isinstance(part, FilePart) and part.file.file_id is not None and provider not in ("openai", "demo"):
                raise InvalidRequest(
                    f"{where}: a file_id names a file uploaded to OpenAI; the {provider} provider cannot read it",
                    param=where,
                )
