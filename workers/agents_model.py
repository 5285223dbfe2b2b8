"""The OpenAI Agents SDK model for the configured provider, spoken to over Chat Completions.

Every provider Switchboard supports has an OpenAI-compatible Chat Completions endpoint, so one model
class serves them all; only the base URL and key differ. The SDK's OpenAI client rides the worker's
shared HTTP client, so connections are pooled with the general assistant's (and `demo` reaches the
in-process demo model through it).
"""

from __future__ import annotations

import httpx2
from agents import ModelSettings, OpenAIChatCompletionsModel
from openai import AsyncOpenAI, OpenAIError

from demo_llm.server import DEMO_MODEL_NAME
from domain.errors import ConfigurationError
from domain.passthrough import TODO_FIELDS
from domain.run_request import ChatJob
from domain.settings import Settings
from workers.llm import DEMO_BASE_URL, OLLAMA_DEFAULT_BASE_URL

ANTHROPIC_OPENAI_BASE_URL = "https://api.anthropic.com/v1/"
# Local servers ignore the key, but the OpenAI client refuses to start without one.
PLACEHOLDER_API_KEY = "not-needed"


def _endpoint(settings: Settings) -> tuple[str | None, str | None]:
    """(base URL, API key) for the provider; None as the base URL means OpenAI's own."""
    api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    provider = settings.llm_provider
    if provider == "demo":
        return DEMO_BASE_URL, "demo"
    if provider == "openai":
        # A local OpenAI-compatible server may need no key; OpenAI's own falls back to OPENAI_API_KEY.
        return settings.llm_base_url, api_key or (PLACEHOLDER_API_KEY if settings.llm_base_url else None)
    if provider == "ollama":
        return settings.llm_base_url or OLLAMA_DEFAULT_BASE_URL, api_key or PLACEHOLDER_API_KEY
    if provider == "anthropic":
        return settings.llm_base_url or ANTHROPIC_OPENAI_BASE_URL, api_key
    raise ConfigurationError(
        f"SWITCHBOARD_LLM_PROVIDER: the todo assistant cannot use provider {provider!r}; "
        "use openai, anthropic, ollama or demo"
    )


def create_agents_model(settings: Settings, http_client: httpx2.AsyncClient) -> OpenAIChatCompletionsModel:
    """The model, built once per worker. A provider it cannot use fails here, at start-up, in one line."""
    base_url, api_key = _endpoint(settings)
    try:
        # No key for `openai` means the client's own default, OPENAI_API_KEY, as for the general assistant.
        client = AsyncOpenAI(base_url=base_url, api_key=api_key, http_client=http_client)
    except OpenAIError as exc:
        raise ConfigurationError(
            f"SWITCHBOARD_LLM_API_KEY: required for provider {settings.llm_provider} "
            "(or set SWITCHBOARD_LLM_BASE_URL for a local OpenAI-compatible server)"
        ) from exc
    model_name = DEMO_MODEL_NAME if settings.llm_provider == "demo" else settings.llm_model or ""
    return OpenAIChatCompletionsModel(model=model_name, openai_client=client)


def agents_model_settings(job: ChatJob) -> ModelSettings:
    """What a turn asks of the model, as the Agents SDK takes it: for the todo assistant and every assistant
    of the file on the `openai-agents` engine."""
    params = job.params
    # What the client sent goes to the model under its own name (`max_tokens` stays `max_tokens`); the API
    # refused the fields this assistant cannot take (`domain/passthrough.py`).
    raw = params.model_dump(
        mode="json", include={"stop", "max_tokens", "max_completion_tokens", *TODO_FIELDS}, exclude_none=True
    )
    return ModelSettings(
        temperature=params.temperature,
        top_p=params.top_p,
        parallel_tool_calls=params.parallel_tool_calls,
        # Off by default for servers other than OpenAI's; every provider here reports it when asked.
        include_usage=True,
        extra_args=raw or None,
    )
