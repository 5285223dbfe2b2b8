"""Building the PydanticAI model that the configured provider serves.

The HTTP client is built once per worker process and shared by every run, so connections to the
provider are pooled rather than opened per request.
"""

from __future__ import annotations

import httpx2
from pydantic_ai.models import Model
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.ollama import OllamaProvider
from pydantic_ai.providers.openai import OpenAIProvider

from demo_llm.server import DEMO_MODEL_NAME, create_demo_app
from demo_llm.transport import StreamingASGITransport
from domain.settings import Settings

DEMO_HOST = "demo.invalid"
DEMO_BASE_URL = f"http://{DEMO_HOST}/v1"
OLLAMA_DEFAULT_BASE_URL = "http://127.0.0.1:11434/v1"


def create_http_client(settings: Settings) -> httpx2.AsyncClient:
    timeout = httpx2.Timeout(settings.run_timeout_s, connect=10.0)
    limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=200)
    demo = StreamingASGITransport(create_demo_app())
    if settings.llm_provider == "demo":
        return httpx2.AsyncClient(transport=demo, timeout=timeout)
    # An assistant of the assistants file may name the demo model whatever provider is configured.
    return httpx2.AsyncClient(timeout=timeout, limits=limits, mounts={f"all://{DEMO_HOST}": demo})


def create_model(settings: Settings, http_client: httpx2.AsyncClient) -> Model:
    api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    provider = settings.llm_provider
    if provider == "demo":
        return OpenAIChatModel(
            DEMO_MODEL_NAME,
            provider=OpenAIProvider(base_url=DEMO_BASE_URL, api_key="demo", http_client=http_client),
        )
    model_name = settings.llm_model or ""
    if provider == "openai":
        return OpenAIChatModel(
            model_name,
            provider=OpenAIProvider(base_url=settings.llm_base_url, api_key=api_key, http_client=http_client),
        )
    if provider == "ollama":
        return OpenAIChatModel(
            model_name,
            provider=OllamaProvider(
                base_url=settings.llm_base_url or OLLAMA_DEFAULT_BASE_URL, api_key=api_key, http_client=http_client
            ),
        )
    # Imported only when used: the Anthropic SDK alone adds seconds to every worker's start-up.
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.providers.anthropic import AnthropicProvider

    return AnthropicModel(
        model_name,
        provider=AnthropicProvider(api_key=api_key, base_url=settings.llm_base_url, http_client=http_client),
    )


def speaks_openai_chat(settings: Settings) -> bool:
    """Whether the provider takes raw OpenAI Chat Completions fields through `extra_body`."""
    return settings.llm_provider in ("openai", "ollama", "demo")
