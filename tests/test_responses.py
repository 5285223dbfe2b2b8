"""OpenAI's Responses API (`/v1/responses`), through the official `openai` client against the shared
`deployment` (real API and worker processes, the fake LLM behind). Each test marks its input with a
unique token and finds its own requests to the fake by it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.deployment import Deployment
from tests.fake_llm import FakeLLM

MODEL = "assistant"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def marker() -> str:
    return "m" + uuid.uuid4().hex[:16]


def requests_with(fake_llm: FakeLLM, token: str) -> list[dict[str, Any]]:
    return [request for request in fake_llm.requests if token in json.dumps(request)]


async def test_create_returns_a_complete_response(deployment: Deployment, fake_llm: FakeLLM) -> None:
    token = marker()
    client = deployment.openai()
    response = await client.responses.create(
        model=MODEL,
        input=f"{token} [[reply:Hello there]]",
        instructions="Be brief.",
        temperature=0.5,
        max_output_tokens=100,
        metadata={"k": "v"},
        reasoning={"effort": "low"},
    )
    assert response.id.startswith("resp_")
    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == MODEL
    assert response.output_text == "Hello there"
    assert response.completed_at is not None and response.created_at > 0
    assert response.usage is not None and response.usage.total_tokens == (
        response.usage.input_tokens + response.usage.output_tokens
    )
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.metadata == {"k": "v"}
    assert response.instructions == "Be brief."
    assert response.temperature == 0.5
    assert response.tool_choice == "auto" and response.tools == [] and response.parallel_tool_calls is True
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    [sent] = requests_with(fake_llm, token)
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["temperature"] == 0.5 and sent["reasoning_effort"] == "low"
    assert response.reasoning is not None and response.reasoning.effort == "low"
    # Read back: the same answer.
    again = await client.responses.retrieve(response.id)
    assert again.status == "completed" and again.output_text == "Hello there" and again.id == response.id


async def test_stream_events_in_order(deployment: Deployment) -> None:
    client = deployment.openai()
    stream = await client.responses.create(model=MODEL, input=f"{marker()} [[reply:one two three four]]", stream=True)
    events = [event async for event in stream]
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[2:4] == ["response.output_item.added", "response.content_part.added"]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(types[4:-4]) == {"response.output_text.delta"}
    assert [event.sequence_number for event in events] == list(range(1, len(events) + 1))
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == "one two three four"
    assert events[-1].response.output_text == "one two three four"
    assert events[-1].response.usage is not None


async def test_stream_helper_and_raw_event_names(deployment: Deployment) -> None:
    client = deployment.openai()
    async with client.responses.stream(model=MODEL, input=f"{marker()} [[reply:streamed]]") as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_response()
    assert final.output_text == "streamed"
    async with deployment.http() as http:
        raw = await http.post("/v1/responses", json={"model": MODEL, "input": "[[reply:x]]", "stream": True})
    blocks = [block for block in raw.text.split("\n\n") if block.strip() and not block.startswith(":")]
    for block in blocks:
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        assert fields["event"] == json.loads(fields["data"])["type"]


async def test_function_tool_round_trip(deployment: Deployment, fake_llm: FakeLLM) -> None:
    token = marker()
    client = deployment.openai()
    first = await client.responses.create(
        model=MODEL, input=f'{token} [[tool:get_weather {{"city": "Oslo"}}]]', tools=[WEATHER]
    )
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    [asked] = requests_with(fake_llm, token)
    assert asked["tools"][0]["function"]["name"] == "get_weather"
    assert json.loads(call.arguments) == {"city": "Oslo"}
    assert first.tools[0].name == "get_weather"
    second = await client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[WEATHER],
    )
    assert second.output_text == "tool said: sunny"
    last = requests_with(fake_llm, token)[-1]
    assert last["messages"][-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}


async def test_streamed_function_call(deployment: Deployment) -> None:
    client = deployment.openai()
    stream = await client.responses.create(
        model=MODEL, input=f'{marker()} [[tool:get_weather {{"city": "Rome"}}]]', tools=[WEATHER], stream=True
    )
    events = [event async for event in stream]
    types = [event.type for event in events]
    assert "response.function_call_arguments.delta" in types
    done = next(event for event in events if event.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == {"city": "Rome"}
    assert types[-1] == "response.completed"
    assert events[-1].response.output[0].type == "function_call"


async def test_stateless_function_call_history(deployment: Deployment, fake_llm: FakeLLM) -> None:
    """Clients that keep the conversation themselves (the Agents SDK) send the call and its output back."""
    token = marker()
    client = deployment.openai()
    response = await client.responses.create(
        model=MODEL,
        tools=[WEATHER],
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": f"{token} weather?"}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "rainy"},
        ],
    )
    assert response.output_text == "tool said: rainy"
    [sent] = requests_with(fake_llm, token)
    assert [message["role"] for message in sent["messages"] if message["role"] != "system"] == [
        "user",
        "assistant",
        "tool",
    ]


async def test_previous_response_id_continues_the_conversation(deployment: Deployment, fake_llm: FakeLLM) -> None:
    token = marker()
    client = deployment.openai()
    first = await client.responses.create(model=MODEL, input=f"{token} my name is Ada [[reply:Hi Ada]]")
    second = await client.responses.create(model=MODEL, input="what is my name?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert second.conversation is not None and first.conversation is not None
    assert second.conversation.id == first.conversation.id
    sent = requests_with(fake_llm, token)[-1]
    texts = [message.get("content") for message in sent["messages"]]
    assert any("my name is Ada" in json.dumps(text) for text in texts)
    assert "Hi Ada" in texts and sent["messages"][-1]["content"] == "what is my name?"


async def test_unknown_previous_response_is_404_and_other_users_cannot_see_it(deployment: Deployment) -> None:
    first = await deployment.openai().responses.create(model=MODEL, input="[[reply:mine]]")
    with pytest.raises(openai.NotFoundError):
        await deployment.openai("bob").responses.create(model=MODEL, input="x", previous_response_id=first.id)
    with pytest.raises(openai.NotFoundError):
        await deployment.openai("bob").responses.retrieve(first.id)


async def test_background_poll_resume_and_cancel(deployment: Deployment) -> None:
    client = deployment.openai()
    queued = await client.responses.create(
        model=MODEL,
        input=f"{marker()} [[reply:done in the background]] [[delay:0.5]]",
        background=True,
        metadata={"ticket": "42"},
        truncation="auto",
    )
    assert queued.status == "queued" and queued.background is True
    polled = await client.responses.retrieve(queued.id)
    assert polled.status in ("queued", "in_progress", "completed")
    # What the request said of itself is kept with its run, for whoever reads it back.
    assert polled.background is True and polled.metadata == {"ticket": "42"} and polled.truncation == "auto"
    for _ in range(100):
        polled = await client.responses.retrieve(queued.id)
        if polled.status == "completed":
            break
        await asyncio.sleep(0.1)
    assert polled.output_text == "done in the background"
    # The whole stream, then its rest after event 3, the same events with the same numbers.
    whole = [event async for event in await client.responses.retrieve(queued.id, stream=True)]
    rest = [event async for event in await client.responses.retrieve(queued.id, stream=True, starting_after=3)]
    assert [event.sequence_number for event in rest] == [event.sequence_number for event in whole[3:]]
    assert [event.type for event in rest] == [event.type for event in whole[3:]]
    assert rest[-1].type == "response.completed"
    # Cancelling a finished response changes nothing, and may be repeated.
    assert (await client.responses.cancel(queued.id)).status == "completed"


async def test_cancel_a_background_response(deployment: Deployment) -> None:
    client = deployment.openai()
    queued = await client.responses.create(
        model=MODEL, input=f"{marker()} [[tokens:400]] [[tokendelay:0.05]]", background=True
    )
    stream = await client.responses.retrieve(queued.id, stream=True)
    async for event in stream:
        if event.type == "response.output_text.delta":
            break
    cancelled = await client.responses.cancel(queued.id)
    assert cancelled.status == "cancelled"
    assert (await client.responses.cancel(queued.id)).status == "cancelled"
    assert (await client.responses.retrieve(queued.id)).status == "cancelled"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL}, "input"),
        ({"model": MODEL, "input": []}, "input"),
        ({"model": MODEL, "input": [{"type": "item_reference", "id": "x"}]}, "input[0]"),
        ({"model": MODEL, "input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
        ({"model": MODEL, "input": "x", "temperature": 9}, "temperature"),
        (
            {"model": MODEL, "input": "x", "previous_response_id": "resp_nope", "conversation": "c"},
            "previous_response_id",
        ),
        ({"model": MODEL, "input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format"),
        ({"model": MODEL, "input": "x", "tool_choice": {"type": "file_search"}}, "tool_choice"),
        (
            {"model": MODEL, "input": [{"type": "mcp_approval_response", "approval_request_id": "c", "approve": True}]},
            "previous_response_id",
        ),
        (
            {
                "model": MODEL,
                "input": [
                    {"type": "mcp_approval_response", "approval_request_id": "c", "approve": True},
                    {"role": "user", "content": "x"},
                ],
            },
            "input",
        ),
        ({"model": MODEL, "input": [{"role": "assistant", "content": "only me"}]}, "input"),
        ({"model": MODEL, "input": "x", "max_tool_calls": 3}, "max_tool_calls"),
        ({"model": MODEL, "input": "x", "top_logprobs": 21}, "top_logprobs"),
        ({"model": MODEL, "input": "x", "presence_penalty": 3}, "presence_penalty"),
    ],
)
async def test_bad_input_is_400(deployment: Deployment, body: dict[str, Any], param: str) -> None:
    async with deployment.http() as http:
        response = await http.post("/v1/responses", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("query", "param"),
    [("stream=true&starting_after=%C2%B2", "starting_after"), ("limit=%C2%B2", "limit"), ("limit=0", "limit")],
)
async def test_bad_query_parameters_are_400(deployment: Deployment, query: str, param: str) -> None:
    created = await deployment.openai().responses.create(model=MODEL, input="[[reply:fine]] hi")
    path = f"/v1/responses/{created.id}" + ("/input_items" if param == "limit" else "")
    async with deployment.http() as client:
        response = await client.get(f"{path}?{query}")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_unknown_response_is_404(deployment: Deployment) -> None:
    with pytest.raises(openai.NotFoundError):
        await deployment.openai().responses.retrieve("resp_" + "0" * 24)
    with pytest.raises(openai.NotFoundError):
        await deployment.openai().responses.cancel("resp_nothing")


async def test_input_items_and_delete(deployment: Deployment) -> None:
    client = deployment.openai()
    first = await client.responses.create(model=MODEL, input="[[reply:noted]] remember 42")
    second = await client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "[[reply:ok]] and 43"}]}],
    )
    items = await client.responses.input_items.list(second.id)
    [item] = items.data
    assert item.type == "message" and item.role == "user"
    assert item.content[0].text == "[[reply:ok]] and 43"
    assert (await client.responses.input_items.list(first.id, order="asc")).data[0].content[0].text.endswith("42")
    await client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete(second.id)
    # The earlier response stays.
    assert (await client.responses.retrieve(first.id)).output_text == "noted"


async def test_openai_agents_sdk_with_its_responses_model_and_a_function_tool(
    deployment: Deployment, fake_llm: FakeLLM
) -> None:
    from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool

    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        calls.append(city)
        return f"sunny in {city}"

    token = marker()
    agent = Agent(
        name="weather",
        instructions="Answer with the weather.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model=MODEL, openai_client=deployment.openai()),
    )
    result = await Runner.run(
        agent, f'{token} [[tool:get_weather {{"city": "Oslo"}}]]', run_config=RunConfig(tracing_disabled=True)
    )
    assert calls == ["Oslo"]
    assert result.final_output == "tool said: sunny in Oslo"


async def test_pydantic_ai_responses_model_with_a_tool_streamed_and_not(deployment: Deployment) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    agent = Agent(OpenAIResponsesModel(MODEL, provider=OpenAIProvider(openai_client=deployment.openai())))

    @agent.tool_plain
    def get_weather(city: str) -> str:
        return f"sunny in {city}"

    result = await agent.run(f'{marker()} [[tool:get_weather {{"city": "Paris"}}]]')
    assert result.output == "tool said: sunny in Paris"
    async with agent.run_stream(f'{marker()} [[tool:get_weather {{"city": "Rome"}}]]') as streamed:
        deltas = [delta async for delta in streamed.stream_text(delta=True, debounce_by=None)]
    assert "".join(deltas) == "tool said: sunny in Rome"


async def test_langchain_with_the_responses_api_a_tool_streamed_and_not(deployment: Deployment) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    from tests.deployment import USERS

    @tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return f"sunny in {city}"

    model = ChatOpenAI(
        model=MODEL, base_url=f"{deployment.base_url}/v1", api_key=USERS["alice"], use_responses_api=True, max_retries=0
    )
    answer = await model.ainvoke(f"{marker()} [[reply:hello from the responses api]]")
    assert answer.text == "hello from the responses api"
    assert answer.response_metadata["id"].startswith("resp_") and answer.usage_metadata
    pieces = [chunk.text async for chunk in model.astream(f"{marker()} [[reply:streamed through langchain]]")]
    assert "".join(pieces) == "streamed through langchain"
    # A tool the client runs: the model asks, LangChain answers with the result, the model goes on.
    with_tools = model.bind_tools([get_weather])
    question = HumanMessage(f'{marker()} [[tool:get_weather {{"city": "Lima"}}]]')
    asked = await with_tools.ainvoke([question])
    [call] = asked.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {"city": "Lima"}
    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    final = await with_tools.ainvoke([question, asked, result])
    assert final.text == "tool said: sunny in Lima"


def open_responses_validators() -> tuple[Callable[[Any], Any], Callable[[dict[str, Any]], Any]]:
    """Validators of a Response object and of a streamed event, from the Open Responses specification's
    own types (`openresponses-types`): each event by the model whose `type` it names."""
    import typing

    import openresponses_types as spec
    from pydantic import BaseModel

    by_type: dict[str, type[BaseModel]] = {}
    for name in dir(spec):
        model = getattr(spec, name)
        if name.endswith("StreamingEvent") and isinstance(model, type) and issubclass(model, BaseModel):
            literal = typing.get_args(model.model_fields["type"].annotation)
            kind = model.model_fields["type"].annotation
            value = typing.get_args(kind)[0] if literal else next(iter(kind.__members__.values())).value
            by_type[getattr(value, "value", value)] = model

    def event(data: dict[str, Any]) -> Any:
        assert data["type"] in by_type, f"{data['type']} is no Open Responses event"
        return by_type[data["type"]].model_validate(data)

    return spec.ResponseResource.model_validate, event


async def test_every_object_and_event_validates_against_the_sdk_types(deployment: Deployment) -> None:
    """The SDK's own parsing is lenient; its pydantic models, validated strictly, name a missing field.
    The Open Responses specification's types check the same objects and events where the specification
    covers them: it has no MCP items, which are OpenAI's."""
    from openai.types.responses import Response, ResponseStreamEvent
    from pydantic import TypeAdapter

    events = TypeAdapter(ResponseStreamEvent)
    open_response, open_event = open_responses_validators()
    bodies = [
        {"model": MODEL, "input": f"{marker()} [[reply:plain]]", "metadata": {"a": "b"}},
        {"model": MODEL, "input": f'{marker()} [[tool:get_weather {{"city": "Oslo"}}]]', "tools": [WEATHER]},
        {"model": MODEL, "input": f"{marker()} [[tokens:50]]", "max_output_tokens": 5},
        {"model": "todo", "input": "[[tool:add_task " + json.dumps({"title": f"check {marker()}"}) + "]]"},
    ]
    async with deployment.http() as http:
        for body in bodies:
            in_spec = body["model"] != "todo"
            answered = await http.post("/v1/responses", json=body)
            assert answered.status_code == 200, answered.text
            Response.model_validate(answered.json())
            if in_spec:
                open_response(answered.json())
            streamed = await http.post("/v1/responses", json={**body, "stream": True})
            blocks = [block for block in streamed.text.split("\n\n") if "data: " in block]
            for block in blocks:
                data = json.loads(block.split("data: ", 1)[1])
                events.validate_python(data)
                if in_spec:
                    open_event(data)
            queued = await http.post("/v1/responses", json={**body, "background": True})
            Response.model_validate(queued.json())
            polled = await http.get(f"/v1/responses/{queued.json()['id']}")
            Response.model_validate(polled.json())
            if in_spec:
                open_response(queued.json())
                open_response(polled.json())


async def test_the_todo_tools_are_listed_and_called_as_mcp_items(deployment: Deployment) -> None:
    title = f"water the plants {marker()}"
    response = await deployment.openai().responses.create(
        model="todo", input="[[tool:add_task " + json.dumps({"title": title}) + "]]"
    )
    listing, call = response.output[0], response.output[1]
    assert listing.type == "mcp_list_tools" and listing.server_label == "todo"
    assert {"add_task", "list_tasks", "complete_task", "delete_task", "update_task"} <= {t.name for t in listing.tools}
    assert call.type == "mcp_call" and (call.server_label, call.name) == ("todo", "add_task")
    assert json.loads(call.arguments) == {"title": title} and call.status == "completed"
    assert title in (call.output or "")


async def test_a_finished_response_is_read_back_from_the_database_once_its_events_are_gone(
    deployment: Deployment,
) -> None:
    from redis.asyncio import Redis

    from domain import keys

    client = deployment.openai()
    answered = await client.responses.create(
        model=MODEL,
        input=f"{marker()} [[reply:kept for good, said slowly enough to take many events]] [[tokendelay:0.02]]",
    )
    run_id = "run_" + answered.id.removeprefix("resp_")
    live = [event async for event in await client.responses.retrieve(answered.id, stream=True)]
    redis = Redis.from_url(deployment.redis_url)
    try:
        await redis.delete(keys.run_log(run_id), keys.run_seq(run_id))
    finally:
        await redis.aclose()
    said = "kept for good, said slowly enough to take many events"
    again = await client.responses.retrieve(answered.id)
    assert again.status == "completed" and again.output_text == said
    events = [event async for event in await client.responses.retrieve(answered.id, stream=True)]
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == said
    # The stored outcome is fewer events than the live stream was: a client that saw all but the last
    # of the live ones still gets the end, numbered on from what it saw.
    assert len(events) < len(live)
    seen = live[-2].sequence_number
    rest = [event async for event in await client.responses.retrieve(answered.id, stream=True, starting_after=seen)]
    assert [event.type for event in rest] == ["response.completed"]
    assert rest[0].sequence_number == seen + 1 and rest[0].response.output_text == said


async def test_a_named_conversation_and_an_unstored_response(deployment: Deployment, fake_llm: FakeLLM) -> None:
    token, name = marker(), "conv-" + marker()
    client = deployment.openai()
    first = await client.responses.create(model=MODEL, input=f"{token} first [[reply:one]]", conversation=name)
    assert first.conversation is not None and first.conversation.id == name
    await client.responses.create(model=MODEL, input="second [[reply:two]]", conversation={"id": name})
    sent = requests_with(fake_llm, token)[-1]
    assert "one" in [message.get("content") for message in sent["messages"]]
    unstored = await client.responses.create(model=MODEL, input=f"{marker()} [[reply:gone]]", store=False)
    assert unstored.store is False and unstored.conversation is None
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(model=MODEL, input="x", previous_response_id=unstored.id)


async def test_a_provider_that_refuses_the_input(deployment: Deployment) -> None:
    from openai.types.responses import ResponseStreamEvent
    from pydantic import TypeAdapter

    client = deployment.openai()
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(model=MODEL, input=f"{marker()} [[error:400 no such thing]]")
    assert refused.value.code == "provider_rejected"
    async with deployment.http() as http:
        streamed = await http.post(
            "/v1/responses", json={"model": MODEL, "input": f"{marker()} [[error:400 nope]]", "stream": True}
        )
    events = [json.loads(block.split("data: ", 1)[1]) for block in streamed.text.split("\n\n") if "data: " in block]
    for event in events:
        TypeAdapter(ResponseStreamEvent).validate_python(event)
    assert events[-1]["type"] == "response.failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "invalid_prompt"
    assert "provider_rejected" in failed["error"]["message"]


async def test_an_image_part_reaches_the_model(deployment: Deployment, fake_llm: FakeLLM) -> None:
    token = marker()
    pixel = "data:image/png;base64," + (
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    )
    await deployment.openai().responses.create(
        model=MODEL,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": f"{token} what is this? [[reply:a pixel]]"},
                    {"type": "input_image", "image_url": pixel, "detail": "low"},
                ],
            }
        ],
    )
    [sent] = requests_with(fake_llm, token)
    parts = sent["messages"][-1]["content"]
    assert {"type": "image_url", "image_url": {"url": pixel, "detail": "low"}} in parts


async def test_polling_an_unfinished_response_shows_its_output_so_far(deployment: Deployment) -> None:
    client = deployment.openai()
    queued = await client.responses.create(
        model=MODEL, input=f"{marker()} [[tokens:200]] [[tokendelay:0.05]]", background=True
    )
    for _ in range(100):
        polled = await client.responses.retrieve(queued.id)
        if polled.output:
            break
        await asyncio.sleep(0.05)
    assert polled.status == "in_progress"
    assert polled.output_text.startswith("tok ") and polled.output[0].status == "in_progress"
    assert (await client.responses.cancel(queued.id)).status == "cancelled"


async def test_tool_choice_and_parallel_tool_calls_reach_the_model(deployment: Deployment, fake_llm: FakeLLM) -> None:
    token = marker()
    response = await deployment.openai().responses.create(
        model=MODEL,
        input=f'{token} [[tool:get_weather {{"city": "Lima"}}]]',
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
    )
    assert response.parallel_tool_calls is False
    [sent] = requests_with(fake_llm, token)
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False


async def test_penalties_and_log_probabilities_reach_the_model_and_come_back(
    deployment: Deployment, fake_llm: FakeLLM
) -> None:
    token = marker()
    response = await deployment.openai().responses.create(
        model=MODEL,
        input=f"{token} [[reply:two words]]",
        extra_body={"presence_penalty": 0.5, "frequency_penalty": -0.25},  # not in the SDK's signature
        top_logprobs=2,
        include=["message.output_text.logprobs"],
        safety_identifier="hashed-user-7",
        prompt_cache_key="tenant-a",
    )
    [sent] = requests_with(fake_llm, token)
    assert (sent["presence_penalty"], sent["frequency_penalty"]) == (0.5, -0.25)
    assert sent["logprobs"] is True and sent["top_logprobs"] == 2
    [text] = response.output[0].content
    assert "".join(entry.token for entry in text.logprobs) == "two words"
    assert all(len(entry.top_logprobs) == 2 for entry in text.logprobs)
    assert response.top_logprobs == 2
    assert (response.model_extra or {}).get("presence_penalty") == 0.5
    again = await deployment.openai().responses.retrieve(response.id)
    assert (again.safety_identifier, again.prompt_cache_key, again.top_logprobs) == ("hashed-user-7", "tenant-a", 2)
    # Without `include`, none are asked for.
    token = marker()
    await deployment.openai().responses.create(model=MODEL, input=f"{token} [[reply:plain]]", top_logprobs=2)
    [sent] = requests_with(fake_llm, token)
    assert "logprobs" not in sent and "top_logprobs" not in sent
