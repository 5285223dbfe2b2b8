"""The test infrastructure itself: the fake LLM server and the service fixtures."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx2
import openai
import pytest

from tests.fake_llm import FakeLLM, parse_directives

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
async def client(fake_llm: FakeLLM) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=fake_llm.base_url, api_key="test-key", max_retries=0) as client:
        yield client


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


def test_parse_directives() -> None:
    directives, rest = parse_directives('hi [[reply:a]b]] [[tool:f {"x": [[1]]}]] [[hang]] [[nope:1]]')
    assert directives == [("reply", "a]b"), ("tool", ("f", {"x": [[1]]})), ("hang", None)]
    assert rest == "hi    [[nope:1]]"


@pytest.mark.asyncio
async def test_streaming_echo(client: openai.AsyncOpenAI, fake_llm: FakeLLM) -> None:
    fake_llm.clear()
    stream = await client.chat.completions.create(
        model="gpt-test", messages=user("hello streaming world"), stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello streaming world"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 5
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    assert all(c.model == "gpt-test" for c in chunks)
    [recorded] = fake_llm.requests
    assert recorded["stream"] is True and recorded["messages"][-1]["content"] == "hello streaming world"


@pytest.mark.asyncio
async def test_non_streaming_reply_and_content_parts(client: openai.AsyncOpenAI) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "[[reply:Hello, exactly.]] ignored"}]}]
    completion = await client.chat.completions.create(model="gpt-test", messages=messages)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Hello, exactly."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0


@pytest.mark.asyncio
async def test_tool_call_streaming_then_tool_result(client: openai.AsyncOpenAI) -> None:
    prompt = 'weather? [[tool:get_weather {"city": "Paris"}]] [[tool:get_weather {"city": "Oslo"}]]'
    stream = await client.chat.completions.create(
        model="gpt-test", messages=user(prompt), tools=[WEATHER_TOOL], stream=True
    )
    calls: dict[int, dict[str, str]] = {}
    finish = []
    async for chunk in stream:
        choice = chunk.choices[0]
        if choice.finish_reason:
            finish.append(choice.finish_reason)
        for tc in choice.delta.tool_calls or []:
            call = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": "", "heads": ""})
            if tc.id:
                call["id"] += tc.id
                call["heads"] += "x"
            if tc.function and tc.function.name:
                call["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                call["arguments"] += tc.function.arguments
    assert finish == ["tool_calls"]
    assert sorted(calls) == [0, 1]
    assert all(c["name"] == "get_weather" and c["heads"] == "x" and c["id"] for c in calls.values())
    assert [json.loads(calls[i]["arguments"]) for i in (0, 1)] == [{"city": "Paris"}, {"city": "Oslo"}]

    follow_up = [
        *user(prompt),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in calls.values()
            ],
        },
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "snow"},
    ]
    completion = await client.chat.completions.create(model="gpt-test", messages=follow_up, tools=[WEATHER_TOOL])
    assert completion.choices[0].message.content == "tool said: sunny | snow"
    assert completion.choices[0].message.tool_calls is None


@pytest.mark.asyncio
async def test_tool_directive_ignored_when_tool_not_offered(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(model="m", messages=user("x [[tool:get_weather {}]]"))
    assert completion.choices[0].message.content == "echo: x"


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_error_directive(client: openai.AsyncOpenAI, stream: bool) -> None:
    with pytest.raises(openai.RateLimitError) as exc_info:
        await client.chat.completions.create(model="m", messages=user("[[error:429]]"), stream=stream)
    assert exc_info.value.status_code == 429
    assert exc_info.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.BadRequestError, match="custom failure"):
        await client.chat.completions.create(model="m", messages=user("[[error:400 custom failure]]"))


@pytest.mark.asyncio
async def test_midstream_error(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="m", messages=user("[[reply:abcdefghijklmnop]] [[midstream_error]]"), stream=True
    )
    received = ""
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received += chunk.choices[0].delta.content or ""
    assert received == "abcdefgh"


@pytest.mark.asyncio
async def test_delays_hang_and_tokens(fake_llm: FakeLLM) -> None:
    async with openai.AsyncOpenAI(base_url=fake_llm.base_url, api_key="k", max_retries=0, timeout=0.3) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="m", messages=user("[[hang]]"))

        started = time.monotonic()
        stream = await client.chat.completions.create(
            model="m", messages=user("[[tokens:12]] [[delay:0.1]] [[tokendelay:0.01]]"), stream=True
        )
        pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert pieces == ["tok "] * 12
    assert time.monotonic() - started >= 0.18


@pytest.mark.asyncio
async def test_models_and_requests_endpoints(client: openai.AsyncOpenAI, fake_llm: FakeLLM) -> None:
    models = await client.models.list()
    assert [m.id for m in models.data] == ["fake-model"]
    async with httpx2.AsyncClient(base_url=fake_llm.url) as http:
        assert (await http.delete("/_requests")).status_code == 200
        await client.chat.completions.create(model="m", messages=user("one"))
        recorded = (await http.get("/_requests")).json()
        assert [r["messages"][-1]["content"] for r in recorded] == ["one"]
        assert (await http.delete("/_requests")).json() == {"cleared": 1}
    assert fake_llm.requests == []


def test_fake_llm_context_manager() -> None:
    with FakeLLM() as llm:
        assert llm.base_url.startswith("http://127.0.0.1:") and llm.base_url.endswith("/v1")
        with openai.OpenAI(base_url=llm.base_url, api_key="k", max_retries=0) as sync_client:
            completion = sync_client.chat.completions.create(model="m", messages=user("sync"))
        assert completion.choices[0].message.content == "echo: sync"
        assert len(llm.wait_for_requests(1)) == 1


@pytest.mark.asyncio
async def test_redis_url_answers_ping(redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_postgres_url_accepts_connections(postgres_url: str) -> None:
    import asyncpg

    assert postgres_url.startswith("postgresql+asyncpg://")
    conn = await asyncpg.connect(postgres_url.replace("+asyncpg", "", 1))
    try:
        assert await conn.fetchval("SELECT 1") == 1
        await conn.execute("CREATE TABLE IF NOT EXISTS _probe (x int)")
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_pydantic_ai_streaming_with_tool(fake_llm: FakeLLM) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    async with openai.AsyncOpenAI(base_url=fake_llm.base_url, api_key="k", max_retries=0) as oai:
        agent = Agent(OpenAIChatModel("fake-model", provider=OpenAIProvider(openai_client=oai)))

        @agent.tool_plain
        def get_weather(city: str) -> str:
            return f"sunny in {city}"

        async with agent.run_stream('[[tool:get_weather {"city": "Paris"}]]') as result:
            deltas = [d async for d in result.stream_text(delta=True, debounce_by=None)]
        assert "".join(deltas) == "tool said: sunny in Paris"
        assert len(deltas) > 1
        assert result.usage.requests == 2 and result.usage.tool_calls == 1
        assert result.usage.output_tokens > 0
