"""The OpenAI Chat Completions wire contract, checked with the official client and byte by byte.

Everything runs against the shared `deployment` (real API and worker processes, the fake LLM behind).
The fake LLM is shared by the session, so each test marks its messages with a unique token and finds
its own requests to the fake by that token.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import httpx2
import openai
import pytest

from tests.deployment import Deployment
from tests.fake_llm import FakeLLM, Script

MODEL = "assistant"
CHAT = "/v1/chat/completions"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a zone.",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
    },
}


# --------------------------------------------------------------------------- helpers


def marker() -> str:
    return "m" + uuid.uuid4().hex[:16]


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def sse_data(raw: bytes) -> list[str]:
    """The `data` of each event of a raw SSE body, checking its framing on the way."""
    text = raw.decode("utf-8")
    assert text.endswith("\n\n"), f"stream does not end with a blank line: {text[-80:]!r}"
    events: list[str] = []
    for block in text.split("\n\n")[:-1]:
        lines = [line for line in block.split("\n") if not line.startswith(":")]  # comments are keep-alives
        if not lines:
            continue
        # A chunk may carry the `id:` of the run event it shows (for resuming); nothing else but data.
        ids = [line for line in lines if line.startswith("id: ")]
        assert all(line[4:].isascii() and line[4:].isdigit() for line in ids), f"bad SSE id: {block!r}"
        data = [line for line in lines if not line.startswith("id: ")]
        assert all(line.startswith("data: ") for line in data), f"unexpected SSE lines: {block!r}"
        events.append("\n".join(line.removeprefix("data: ") for line in data))
    return events


def stream_payloads(raw: bytes) -> list[dict[str, Any]]:
    """The JSON events of a stream that must end with exactly one `data: [DONE]`, as the last event."""
    events = sse_data(raw)
    assert events, "empty stream"
    assert events[-1] == "[DONE]", f"last event is {events[-1]!r}, not [DONE]"
    assert events.count("[DONE]") == 1
    assert raw.endswith(b"data: [DONE]\n\n")
    return [json.loads(event) for event in events[:-1]]


async def post_stream(
    client: httpx2.AsyncClient, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[httpx2.Response, bytes]:
    async with client.stream("POST", CHAT, json={"model": MODEL, "stream": True, **body}, headers=headers) as response:
        raw = await response.aread()
    return response, raw


def check_chunks(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Assert OpenAI's chunk ordering rules; return what the stream said.

    Returns text, finish_reason, tool call deltas (raw dicts, in order) and usage chunks.
    """
    assert chunks, "no chunks before [DONE]"
    ids = {chunk["id"] for chunk in chunks}
    createds = {chunk["created"] for chunk in chunks}
    assert len(ids) == 1, f"id changes within the stream: {ids}"
    assert len(createds) == 1, f"created changes within the stream: {createds}"
    (completion_id,) = ids
    assert isinstance(completion_id, str) and completion_id.startswith("chatcmpl-")
    (created,) = createds
    assert isinstance(created, int) and abs(created - time.time()) < 300
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == MODEL
    with_choices = [chunk for chunk in chunks if chunk["choices"]]
    usage_chunks = [chunk for chunk in chunks if not chunk["choices"]]
    assert with_choices, "no chunk carries a choice"
    # Usage chunks, if any, come after every chunk with choices.
    assert chunks[: len(with_choices)] == with_choices

    deltas = [chunk["choices"][0]["delta"] for chunk in with_choices]
    for chunk in with_choices:
        assert len(chunk["choices"]) == 1 and chunk["choices"][0]["index"] == 0
    assert deltas[0].get("role") == "assistant", f"first delta has no role: {deltas[0]}"
    assert all("role" not in delta for delta in deltas[1:]), "role repeated after the first delta"

    reasons = [chunk["choices"][0].get("finish_reason") for chunk in with_choices]
    assert all(reason is None for reason in reasons[:-1]), f"finish_reason before the last chunk: {reasons}"
    assert reasons[-1] is not None, "no finish_reason in the last chunk"
    for chunk in with_choices:
        assert "usage" not in chunk or chunk["usage"] is None

    text = "".join(delta.get("content") or "" for delta in deltas)
    tool_deltas = [call for delta in deltas for call in delta.get("tool_calls") or ()]
    return {"text": text, "finish_reason": reasons[-1], "tool_deltas": tool_deltas, "usage_chunks": usage_chunks}


def assemble_tool_calls(tool_deltas: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Join tool call deltas by index, asserting `id`, `type` and `name` come only in each call's first."""
    calls: dict[int, dict[str, Any]] = {}
    for delta in tool_deltas:
        index = delta["index"]
        assert isinstance(index, int)
        if index not in calls:
            assert isinstance(delta.get("id"), str) and delta["id"], f"first delta of call {index} has no id"
            assert delta.get("type") == "function"
            assert isinstance(delta["function"].get("name"), str) and delta["function"]["name"]
            calls[index] = {"id": delta["id"], "name": delta["function"]["name"], "arguments": ""}
        else:
            assert "id" not in delta, f"id repeated in a later delta of call {index}: {delta}"
            assert "type" not in delta, f"type repeated in a later delta of call {index}: {delta}"
            assert "name" not in delta.get("function", {}), f"name repeated in call {index}: {delta}"
        calls[index]["arguments"] += delta.get("function", {}).get("arguments") or ""
    return calls


def requests_with(fake_llm: FakeLLM, token: str) -> list[dict[str, Any]]:
    """The chat requests the fake LLM received that mention `token` anywhere."""
    return [request for request in fake_llm.requests if token in json.dumps(request)]


def only_request_with(fake_llm: FakeLLM, token: str) -> dict[str, Any]:
    found = requests_with(fake_llm, token)
    assert len(found) == 1, f"expected one request to the fake LLM with {token}, got {len(found)}"
    return found[0]


# --------------------------------------------------------------------------- streaming


async def test_stream_with_official_client(deployment: Deployment) -> None:
    client = deployment.openai()
    stream = await client.chat.completions.create(
        model=MODEL, messages=user("[[reply:Hello from the stream, friend.]]"), stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert len(chunks) >= 3
    assert len({chunk.id for chunk in chunks}) == 1
    assert len({chunk.created for chunk in chunks}) == 1
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(chunk.choices[0].delta.role is None for chunk in chunks[1:])
    reasons = [chunk.choices[0].finish_reason for chunk in chunks]
    assert reasons[-1] == "stop" and all(reason is None for reason in reasons[:-1])
    assert all(chunk.usage is None for chunk in chunks)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == "Hello from the stream, friend."


async def test_stream_raw_sse(deployment: Deployment) -> None:
    async with deployment.http() as client:
        response, raw = await post_stream(client, {"messages": user("[[reply:raw bytes over the wire]]")})
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0].strip() == "text/event-stream"
    chunks = stream_payloads(raw)
    said = check_chunks(chunks)
    assert said["text"] == "raw bytes over the wire"
    assert said["finish_reason"] == "stop"
    assert said["tool_deltas"] == []
    assert said["usage_chunks"] == [], "usage sent without stream_options.include_usage"


async def test_stream_include_usage_adds_one_final_usage_chunk(deployment: Deployment, fake_llm: FakeLLM) -> None:
    token = marker()
    async with deployment.http() as client:
        response, raw = await post_stream(
            client,
            {"messages": user(f"[[reply:counted tokens]] {token}"), "stream_options": {"include_usage": True}},
        )
    assert response.status_code == 200
    chunks = stream_payloads(raw)
    said = check_chunks(chunks)
    assert said["text"] == "counted tokens"
    assert len(said["usage_chunks"]) == 1
    last = chunks[-1]
    assert last is said["usage_chunks"][0], "the usage chunk is not the last before [DONE]"
    assert last["choices"] == []
    expected = Script.from_body(only_request_with(fake_llm, token)).usage()
    assert last["usage"] == expected


async def test_stream_include_usage_with_official_client(deployment: Deployment) -> None:
    client = deployment.openai()
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=user("[[reply:usage please]]"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert all(chunk.usage is None for chunk in chunks[:-1])


# --------------------------------------------------------------------------- non-streaming


async def test_non_streaming_completion(deployment: Deployment, fake_llm: FakeLLM) -> None:
    token = marker()
    client = deployment.openai()
    completion = await client.chat.completions.create(model=MODEL, messages=user(f"[[reply:plain answer]] {token}"))
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL
    assert isinstance(completion.created, int) and abs(completion.created - time.time()) < 300
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == "plain answer"
    assert not choice.message.tool_calls
    assert completion.usage is not None
    expected = Script.from_body(only_request_with(fake_llm, token)).usage()
    assert completion.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}) == expected


# --------------------------------------------------------------------------- client tools


async def test_client_tool_call_streams_as_tool_call_deltas(deployment: Deployment, fake_llm: FakeLLM) -> None:
    token = marker()
    async with deployment.http() as client:
        response, raw = await post_stream(
            client,
            {
                "messages": user(f'What is the weather? {token} [[tool:get_weather {{"city": "Paris"}}]]'),
                "tools": [WEATHER_TOOL],
                "tool_choice": "auto",
            },
        )
    assert response.status_code == 200
    said = check_chunks(stream_payloads(raw))
    assert said["finish_reason"] == "tool_calls"
    assert said["text"] == ""
    calls = assemble_tool_calls(said["tool_deltas"])
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    # The tool was offered to the model as the client declared it.
    sent = only_request_with(fake_llm, token)
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["get_weather"]
    assert sent["tools"][0]["function"]["parameters"]["properties"] == {"city": {"type": "string"}}


async def test_parallel_client_tool_calls_get_indexes_0_and_1(deployment: Deployment) -> None:
    async with deployment.http() as client:
        response, raw = await post_stream(
            client,
            {
                "messages": user('Both please [[tool:get_weather {"city": "Oslo"}]] [[tool:get_time {"zone": "CET"}]]'),
                "tools": [WEATHER_TOOL, TIME_TOOL],
                "parallel_tool_calls": True,
            },
        )
    assert response.status_code == 200
    said = check_chunks(stream_payloads(raw))
    assert said["finish_reason"] == "tool_calls"
    calls = assemble_tool_calls(said["tool_deltas"])
    assert sorted(calls) == [0, 1]
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == {"city": "Oslo"}
    assert calls[1]["name"] == "get_time" and json.loads(calls[1]["arguments"]) == {"zone": "CET"}
    assert calls[0]["id"] != calls[1]["id"]


async def test_parallel_client_tool_calls_with_official_client(deployment: Deployment) -> None:
    client = deployment.openai()
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=user('[[tool:get_weather {"city": "Rome"}]] [[tool:get_time {"zone": "UTC"}]]'),
        tools=[WEATHER_TOOL, TIME_TOOL],  # type: ignore[list-item]
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    names: dict[int, str] = {}
    arguments: dict[int, str] = {}
    for chunk in chunks:
        for call in chunk.choices[0].delta.tool_calls or ():
            if call.id is not None:
                assert call.index not in names, "id sent twice for one call"
                names[call.index] = call.function.name  # type: ignore[union-attr]
            arguments[call.index] = arguments.get(call.index, "") + (call.function.arguments or "")  # type: ignore[union-attr]
    assert names == {0: "get_weather", 1: "get_time"}
    assert {index: json.loads(args) for index, args in arguments.items()} == {0: {"city": "Rome"}, 1: {"zone": "UTC"}}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_client_tool_call_non_streaming(deployment: Deployment) -> None:
    client = deployment.openai()
    completion = await client.chat.completions.create(
        model=MODEL,
        messages=user('[[tool:get_weather {"city": "Lima"}]] [[tool:get_time {"zone": "PET"}]]'),
        tools=[WEATHER_TOOL, TIME_TOOL],  # type: ignore[list-item]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 2
    assert [call.type for call in calls] == ["function", "function"]
    assert [call.function.name for call in calls] == ["get_weather", "get_time"]  # type: ignore[union-attr]
    assert [json.loads(call.function.arguments) for call in calls] == [{"city": "Lima"}, {"zone": "PET"}]  # type: ignore[union-attr]
    assert all(call.id for call in calls) and calls[0].id != calls[1].id
    assert completion.usage is not None


async def test_tool_result_round_trip(deployment: Deployment, fake_llm: FakeLLM) -> None:
    client = deployment.openai()
    question = {"role": "user", "content": '[[tool:get_weather {"city": "Paris"}]] weather?'}
    first = await client.chat.completions.create(
        model=MODEL,
        messages=[question],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    calls = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls" and calls
    result = f"sunny, 21C {marker()}"
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[
            question,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": calls[0].id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": calls[0].function.arguments},  # type: ignore[union-attr]
                    }
                ],
            },
            {"role": "tool", "tool_call_id": calls[0].id, "content": result},
        ],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == f"tool said: {result}"
    assert chunks[-1].choices[0].finish_reason == "stop"
    # The provider saw the call and its result, tied by the call id.
    sent = only_request_with(fake_llm, result)
    assistant = next(message for message in sent["messages"] if message["role"] == "assistant")
    assert [call["id"] for call in assistant["tool_calls"]] == [calls[0].id]
    assert assistant["tool_calls"][0]["function"]["name"] == "get_weather"
    tool_message = sent["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == calls[0].id


async def test_parallel_tool_results_round_trip(deployment: Deployment) -> None:
    client = deployment.openai()
    completion = await client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "weather and time?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_a1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
                    {"id": "call_b2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_a1", "content": "rainy"},
            {"role": "tool", "tool_call_id": "call_b2", "content": "noon"},
        ],
        tools=[WEATHER_TOOL, TIME_TOOL],  # type: ignore[list-item]
        parallel_tool_calls=True,
    )
    assert completion.choices[0].message.content == "tool said: rainy | noon"
    assert completion.choices[0].finish_reason == "stop"


async def test_tool_choice_none_does_not_offer_tools(deployment: Deployment, fake_llm: FakeLLM) -> None:
    token = marker()
    client = deployment.openai()
    completion = await client.chat.completions.create(
        model=MODEL,
        messages=user(f'[[tool:get_weather {{"city": "Paris"}}]] {token}'),
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="none",
    )
    sent = only_request_with(fake_llm, token)
    assert not sent.get("tools"), f"tools offered despite tool_choice none: {sent.get('tools')}"
    assert completion.choices[0].finish_reason == "stop"
    assert not completion.choices[0].message.tool_calls
    assert completion.choices[0].message.content == f"echo: {token}"


async def test_tool_choice_and_parallel_tool_calls_are_forwarded(deployment: Deployment, fake_llm: FakeLLM) -> None:
    client = deployment.openai()
    required, named = marker(), marker()
    await client.chat.completions.create(
        model=MODEL,
        messages=user(f'[[tool:get_weather {{"city": "Bern"}}]] {required}'),
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="required",
        parallel_tool_calls=False,
    )
    choice = {"type": "function", "function": {"name": "get_weather"}}
    await client.chat.completions.create(
        model=MODEL,
        messages=user(f'[[tool:get_weather {{"city": "Bern"}}]] {named}'),
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice=choice,  # type: ignore[arg-type]
    )
    sent_required = only_request_with(fake_llm, required)
    assert sent_required["tool_choice"] == "required"
    assert sent_required["parallel_tool_calls"] is False
    assert only_request_with(fake_llm, named)["tool_choice"] == choice


# --------------------------------------------------------------------------- accepted request fields


async def test_sampling_parameters_are_forwarded(deployment: Deployment, fake_llm: FakeLLM) -> None:
    first, second = marker(), marker()
    async with deployment.http() as client:
        response = await client.post(
            CHAT,
            json={
                "model": MODEL,
                "messages": user(f"[[reply:ok]] {first}"),
                "temperature": 0.3,
                "top_p": 0.9,
                "max_tokens": 55,
                "stop": "END",
                "user": "end-user-7",
                "n": 1,
                "seed": 42,
                "frequency_penalty": 0.1,
                "metadata": {"anything": ["goes"]},
                "some_future_field": {"nested": True},
            },
        )
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "ok"
        response = await client.post(
            CHAT,
            json={
                "model": MODEL,
                "messages": user(f"[[reply:ok]] {second}"),
                "max_completion_tokens": 77,
                "stop": ["A-STOP", "B-STOP"],
                "user": {"id": "end-user-8", "email": "x@example.com"},
            },
        )
        assert response.status_code == 200, response.text
    sent = only_request_with(fake_llm, first)
    assert sent["temperature"] == 0.3
    assert sent["top_p"] == 0.9
    assert sent.get("max_completion_tokens", sent.get("max_tokens")) == 55
    assert sent["stop"] in (["END"], "END")
    sent = only_request_with(fake_llm, second)
    assert sent.get("max_completion_tokens", sent.get("max_tokens")) == 77
    assert sent["stop"] == ["A-STOP", "B-STOP"]
    assert "temperature" not in sent and "top_p" not in sent


async def test_developer_role_and_text_parts(deployment: Deployment, fake_llm: FakeLLM) -> None:
    token = marker()
    client = deployment.openai()
    completion = await client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "developer", "content": f"Answer in French. {token}"},
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {
                "role": "user",
                "content": [{"type": "text", "text": "[[reply:"}, {"type": "text", "text": "from parts]]"}],
            },
        ],
    )
    assert completion.choices[0].message.content == "from parts"
    sent = only_request_with(fake_llm, token)
    instructions = [m for m in sent["messages"] if m["role"] in ("system", "developer")]
    texts = json.dumps(instructions)
    assert f"Answer in French. {token}" in texts
    assert "Be brief." in texts


# --------------------------------------------------------------------------- models, health


async def test_models_list_and_retrieve(deployment: Deployment) -> None:
    client = deployment.openai()
    models = [model async for model in client.models.list()]
    assert MODEL in [model.id for model in models]
    assert all(model.object == "model" for model in models)
    model = await client.models.retrieve(MODEL)
    assert model.id == MODEL and model.object == "model"
    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve("no-such-model")
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"


async def test_models_need_auth(deployment: Deployment) -> None:
    async with deployment.http(user=None) as client:
        for path in ("/v1/models", f"/v1/models/{MODEL}"):
            response = await client.get(path)
            assert response.status_code == 401, path
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        response = await client.get("/v1/models/no-such-model", headers={"Authorization": "Bearer key-alice"})
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"


async def test_health_endpoints_need_no_auth(deployment: Deployment) -> None:
    async with deployment.http(user=None) as client:
        healthz = await client.get("/healthz")
        readyz = await client.get("/readyz")
    assert healthz.status_code == 200 and healthz.json()["status"] == "ok"
    assert readyz.status_code == 200
    assert readyz.json() == {"status": "ready", "database": "ok", "redis": "ok", "workers": "ok"}


# --------------------------------------------------------------------------- headers


async def test_request_id_echoed_or_generated(deployment: Deployment) -> None:
    given = f"client-req-{marker()}"
    async with deployment.http() as client:
        response = await client.post(
            CHAT, json={"model": MODEL, "messages": user("[[reply:ok]]")}, headers={"X-Request-ID": given}
        )
        assert response.status_code == 200
        assert response.headers["x-request-id"] == given
        runs = await deployment.query("SELECT id FROM runs WHERE request_id = :rid", rid=given)
        assert len(runs) == 1, "the run does not carry the client's request id"

        stream_response, _ = await post_stream(
            client, {"messages": user("[[reply:ok]]")}, headers={"X-Request-ID": given + "-s"}
        )
        assert stream_response.headers["x-request-id"] == given + "-s"

        generated = [
            (await client.post(CHAT, json={"model": MODEL, "messages": user("[[reply:ok]]")})).headers["x-request-id"],
            (await client.get("/v1/models")).headers["x-request-id"],
            (await client.post(CHAT, content=b"{not json")).headers["x-request-id"],
        ]
        assert all(value for value in generated)
        assert len(set(generated)) == 3, f"generated request ids repeat: {generated}"

        # Also on errors, and for a value not fit to be echoed.
        response = await client.post(CHAT, content=b"{not json", headers={"X-Request-ID": given})
        assert response.status_code == 400 and response.headers["x-request-id"] == given
        response = await client.get("/v1/models", headers={"X-Request-ID": "bad id\twith spaces"})
        assert response.headers["x-request-id"] not in ("", "bad id\twith spaces")


async def test_conversation_id_returned_on_every_chat_response(deployment: Deployment) -> None:
    async with deployment.http() as client:
        response = await client.post(CHAT, json={"model": MODEL, "messages": user("[[reply:first]]")})
        assert response.status_code == 200
        new_id = response.headers.get("x-conversation-id")
        assert new_id, "no X-Conversation-ID on a new conversation"

        stream_response, _ = await post_stream(client, {"messages": user("[[reply:second]]")})
        streamed_id = stream_response.headers.get("x-conversation-id")
        assert streamed_id and streamed_id != new_id, "streaming without an id must start a new conversation"

        given = f"conv-{marker()}"
        response = await client.post(
            CHAT, json={"model": MODEL, "messages": user("[[reply:third]]")}, headers={"X-Conversation-ID": given}
        )
        assert response.headers["x-conversation-id"] == given
        stream_response, _ = await post_stream(
            client, {"messages": user("[[reply:fourth]]")}, headers={"X-Conversation-ID": given}
        )
        assert stream_response.headers["x-conversation-id"] == given

    # The returned ids name the stored conversations.
    stored = await deployment.wait_for(
        "SELECT m.content FROM messages m JOIN conversations c ON c.id = m.conversation_id "
        "WHERE c.user_id = 'alice' AND c.key = :key AND m.role = 'assistant'",
        key=new_id,
    )
    assert [row["content"] for row in stored] == ["first"]
    rows = await deployment.wait_for(
        "SELECT 1 FROM messages m JOIN conversations c ON c.id = m.conversation_id "
        "WHERE c.user_id = 'alice' AND c.key = :key AND m.role = 'assistant' HAVING count(*) >= 2",
        key=given,
    )
    assert rows
    messages = await deployment.messages("alice", given)
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "[[reply:third]]"),
        ("assistant", "third"),
        ("user", "[[reply:fourth]]"),
        ("assistant", "fourth"),
    ]
    assert re.fullmatch(r"[A-Za-z0-9_-]+", new_id)
