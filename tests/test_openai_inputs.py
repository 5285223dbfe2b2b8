"""What clients send is passed to the model, or refused clearly, never dropped in silence (issue 10, part 2).

Through the official `openai` SDK (and raw HTTP where the wire itself is the point) against the shared
`deployment`, checking what the fake LLM received. Each test marks its messages with a unique token
and finds its own requests to the fake by it.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx2
import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionTokenLogprob
from pydantic import BaseModel
from pydantic_ai.exceptions import ModelHTTPError, UserError

from demo_llm.server import create_demo_app
from domain.chat import ChatMessage, ModelParams
from domain.errors import InvalidRequest
from domain.passthrough import check_passable
from tests.deployment import Deployment
from tests.fake_llm import FakeLLM
from tests.test_openai_wire import CHAT, MODEL, marker, only_request_with, post_stream, requests_with, stream_payloads
from workers.provider_errors import ProviderFailure, provider_errors

# A 1x1 PNG.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
PNG_URL = f"data:image/png;base64,{PNG}"
WAV = base64.b64encode(b"RIFF\x24\x00\x00\x00WAVEfmt ").decode()
PDF_URL = "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4 demo").decode()
MAX_PART_BYTES = 10 * 1024 * 1024  # the default SWITCHBOARD_MAX_PART_BYTES


def image_message(text: str, url: str = PNG_URL, **image: Any) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url, **image}}],
        }
    ]


def user_parts(request: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The content parts of each user message the provider was sent that has parts."""
    return [m["content"] for m in request["messages"] if m["role"] == "user" and isinstance(m["content"], list)]


# --------------------------------------------------------------------------- content parts


async def test_image_part_reaches_the_provider_is_stored_and_is_replayed_next_turn(
    deployment: Deployment, fake_llm: FakeLLM
) -> None:
    first, second, conversation = marker(), marker(), "conv-" + uuid.uuid4().hex
    client = deployment.openai()
    headers = {"X-Conversation-ID": conversation}
    reply = await client.chat.completions.create(
        model=MODEL, messages=image_message(f"[[reply:a red dot]] {first}", detail="low"), extra_headers=headers
    )
    assert reply.choices[0].message.content == "a red dot"
    (parts,) = user_parts(only_request_with(fake_llm, first))
    assert parts == [
        {"type": "text", "text": f"[[reply:a red dot]] {first}"},
        {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "low"}},
    ]

    stored = await deployment.query(
        "SELECT m.role, m.content, m.parts FROM messages m JOIN conversations c ON c.id = m.conversation_id "
        "WHERE c.user_id = 'alice' AND c.key = :key ORDER BY m.id",
        key=conversation,
    )
    assert [row["role"] for row in stored] == ["user", "assistant"]
    parts_column = stored[0]["parts"]
    stored_parts = json.loads(parts_column) if isinstance(parts_column, str) else parts_column
    assert stored_parts[1] == {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "low"}}
    assert stored[0]["content"] == f"[[reply:a red dot]] {first}", "content keeps the text, for listings"
    assert stored[1]["parts"] is None

    # The next turn sends only its new message: the stored image goes to the model with the history.
    await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": f"and now? {second}"}], extra_headers=headers
    )
    replayed = only_request_with(fake_llm, second)
    assert [m["role"] for m in replayed["messages"] if m["role"] != "system"] == ["user", "assistant", "user"]
    assert user_parts(replayed) == [parts]

    # Listings show the message's text as before.
    async with deployment.http() as http:
        listed = await http.get(f"/api/alice/conversations/{conversation}/messages")
        assert listed.status_code == 200, listed.text
        assert [m["content"] for m in listed.json()["data"]][:2] == [f"[[reply:a red dot]] {first}", "a red dot"]
        runs = await http.get("/v1/runs", params={"conversation_id": conversation})
        assert runs.status_code == 200 and len(runs.json()["data"]) == 2


async def test_image_url_audio_and_file_parts_reach_the_provider_as_sent(
    deployment: Deployment, fake_llm: FakeLLM
) -> None:
    token = marker()
    content = [
        {"type": "text", "text": f"[[reply:ok]] {token}"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}},
        {"type": "file", "file": {"file_data": PDF_URL, "filename": "notes.pdf"}},
        {"type": "file", "file": {"file_id": "file-abc123"}},
    ]
    client = deployment.openai()
    await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}])
    (parts,) = user_parts(only_request_with(fake_llm, token))
    assert parts[0] == content[0]
    assert parts[1] == {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    assert parts[2] == {"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}}
    # PydanticAI names inline files itself; their data arrives as sent.
    assert parts[3]["type"] == "file" and parts[3]["file"]["file_data"] == PDF_URL
    assert parts[4] == {"type": "file", "file": {"file_id": "file-abc123"}}


async def test_a_part_over_the_size_limit_is_413_and_one_at_it_gets_through(
    deployment: Deployment, fake_llm: FakeLLM
) -> None:
    """The chat body limit leaves room for a part of SWITCHBOARD_MAX_PART_BYTES sent base64-encoded."""
    token, conversation = marker(), "conv-" + uuid.uuid4().hex
    async with deployment.http() as http:
        big = base64.b64encode(bytes(MAX_PART_BYTES + 1)).decode()
        response = await http.post(
            CHAT,
            json={"model": MODEL, "messages": image_message("too big", f"data:image/png;base64,{big}")},
            headers={"X-Conversation-ID": conversation},
        )
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert error["param"] == "messages.0.content.1"
        assert "image_url part holds 10485761 bytes, more than the 10485760 allowed" in error["message"]
        assert await deployment.messages("alice", conversation) == [], "a refused turn is not stored"

        at_limit = base64.b64encode(bytes(MAX_PART_BYTES)).decode()
        audio = {"type": "input_audio", "input_audio": {"data": at_limit, "format": "wav"}}
        message = {"role": "user", "content": [{"type": "text", "text": f"[[reply:heard]] {token}"}, audio]}
        response = await http.post(CHAT, json={"model": MODEL, "messages": [message]})
        assert response.status_code == 200, response.text
    (parts,) = user_parts(only_request_with(fake_llm, token))
    assert parts[1]["input_audio"]["data"] == at_limit


async def test_validation_errors_name_the_problem_in_the_clients_terms(deployment: Deployment) -> None:
    cases = [
        (
            [{"role": "user", "content": [{"type": "video", "video": {}}]}],
            "messages.0.content.0: a content part must be an object whose type is text, image_url, input_audio or file",
        ),
        ([{"role": "user", "content": 5}], "messages.0.content: content must be a string or a list of content parts"),
        (image_message("x", "ftp://example.com/a.png"), "an image URL must be an http(s) URL or a data URL"),
        (image_message("x", "data:image/png;base64,@@@"), "image_url.url: the data is not valid base64"),
        (
            [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": PNG_URL}}]}],
            "messages.0: only user messages may have image_url parts",
        ),
        (
            [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": WAV, "format": "ogg"}}]}],
            "messages.0.content.0.input_audio.format: Input should be 'wav' or 'mp3'",
        ),
        (
            [{"role": "user", "content": [{"type": "file", "file": {"file_data": "data:video/mp4;base64,AAAA"}}]}],
            "messages.0.content.0.file: a file part cannot carry video/mp4",
        ),
        (
            [{"role": "user", "content": [{"type": "file", "file": {"file_data": "/w==", "filename": "a.txt"}}]}],
            "messages.0.content.0.file: a text/plain file must be UTF-8 text",
        ),
    ]
    async with deployment.http() as http:
        for messages, expected in cases:
            response = await http.post(CHAT, json={"model": MODEL, "messages": messages})
            assert response.status_code == 400, response.text
            message = response.json()["error"]["message"]
            assert expected in message
            assert "function-after" not in message and "tagged-union" not in message
        response = await http.post(
            CHAT, json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stop": 5}
        )
        assert (
            response.json()["error"]["message"]
            == "stop: Input should be a valid string, or input should be a valid list"
        )


async def test_a_provider_refusing_a_part_is_a_400_with_its_message(deployment: Deployment) -> None:
    said = "Invalid image: the image could not be decoded"
    client = deployment.openai()
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model=MODEL, messages=image_message(f"[[error:400 {said}]] {marker()}"))
    assert said in refused.value.message
    assert refused.value.code == "provider_rejected"

    # Streamed, the refusal arrives as the stream's error event, with the same code and message.
    async with deployment.http() as http:
        response, raw = await post_stream(http, {"messages": image_message(f"[[error:400 {said}]] {marker()}")})
    assert response.status_code == 200, "a stream has begun before its run fails"
    errors = [event["error"] for event in stream_payloads(raw) if "error" in event]
    assert len(errors) == 1 and errors[0]["code"] == "provider_rejected" and said in errors[0]["message"]


# --------------------------------------------------------------------------- structured output


class CalendarEvent(BaseModel):
    name: str
    day: str
    guests: list[str]


async def test_structured_output_with_parse(deployment: Deployment, fake_llm: FakeLLM) -> None:
    token = marker()
    answer = '{"name": "Launch", "day": "Friday", "guests": ["Ann", "Bo"]}'
    client = deployment.openai()
    completion = await client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": f"[[reply:{answer}]] {token}"}],
        response_format=CalendarEvent,
    )
    assert completion.choices[0].message.parsed == CalendarEvent(name="Launch", day="Friday", guests=["Ann", "Bo"])
    sent = only_request_with(fake_llm, token)["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["name"] == "CalendarEvent" and sent["json_schema"]["strict"] is True
    assert sent["json_schema"]["schema"]["required"] == ["name", "day", "guests"]
    assert sent["json_schema"]["schema"]["additionalProperties"] is False

    token = marker()
    await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": f"[[reply:{{}}]] {token}"}],
        response_format={"type": "json_object"},
    )
    assert only_request_with(fake_llm, token)["response_format"] == {"type": "json_object"}


async def test_langchain_structured_output_and_an_image(deployment: Deployment, fake_llm: FakeLLM) -> None:
    """LangChain's `with_structured_output` and its multimodal messages, as its users write them."""
    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI

    from tests.deployment import USERS

    model = ChatOpenAI(model=MODEL, base_url=f"{deployment.base_url}/v1", api_key=USERS["alice"], max_retries=0)
    token = marker()
    answer = '{"name": "Review", "day": "Monday", "guests": ["Cy"]}'
    structured = model.with_structured_output(CalendarEvent, method="json_schema", strict=True)
    event = await structured.ainvoke(f"[[reply:{answer}]] {token}")
    assert event == CalendarEvent(name="Review", day="Monday", guests=["Cy"])
    assert only_request_with(fake_llm, token)["response_format"]["json_schema"]["name"] == "CalendarEvent"

    token = marker()
    picture = {"type": "image_url", "image_url": {"url": PNG_URL}}
    seen = await model.ainvoke([HumanMessage(content=[{"type": "text", "text": f"[[reply:a dot]] {token}"}, picture])])
    assert seen.text == "a dot"
    [sent] = [m for m in only_request_with(fake_llm, token)["messages"] if m["role"] == "user"]
    assert sent["content"][1] == picture


# --------------------------------------------------------------------------- passed-through fields


async def test_each_field_reaches_the_provider_under_its_own_name(deployment: Deployment, fake_llm: FakeLLM) -> None:
    fields = {
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.25,
        "logit_bias": {"1234": -100, "42": 5},
        "logprobs": True,
        "top_logprobs": 2,
        "reasoning_effort": "low",
        "max_tokens": 64,
    }
    first, second = marker(), marker()
    async with deployment.http() as http:
        response = await http.post(
            CHAT, json={"model": MODEL, "messages": [{"role": "user", "content": first}], **fields}
        )
        assert response.status_code == 200, response.text
        response = await http.post(
            CHAT, json={"model": MODEL, "messages": [{"role": "user", "content": second}], "max_completion_tokens": 77}
        )
        assert response.status_code == 200, response.text
    sent = only_request_with(fake_llm, first)
    assert {name: sent.get(name) for name in fields} == fields
    assert "max_completion_tokens" not in sent, "max_tokens reaches the provider as max_tokens"
    sent = only_request_with(fake_llm, second)
    assert sent["max_completion_tokens"] == 77 and "max_tokens" not in sent


async def test_logprobs_come_back_streamed_and_not(deployment: Deployment) -> None:
    client = deployment.openai()
    completion = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "[[reply:two words]]"}], logprobs=True, top_logprobs=2
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert "".join(entry.token for entry in logprobs.content) == "two words"
    assert [entry.logprob for entry in logprobs.content] == [0.0, -0.1, -0.2]
    assert all(len(entry.top_logprobs) == 2 for entry in logprobs.content)

    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "[[reply:two words]]"}], logprobs=True, stream=True
    )
    # Each chunk's log probabilities join up, as the SDK's own stream helpers join them.
    tokens = [entry.token async for chunk in stream for entry in _chunk_logprobs(chunk)]
    assert "".join(tokens) == "two words"

    plain = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "[[reply:x]]"}])
    assert plain.choices[0].logprobs is None, "no logprobs unless asked for"


def _chunk_logprobs(chunk: ChatCompletionChunk) -> list[ChatCompletionTokenLogprob]:
    logprobs = chunk.choices[0].logprobs
    return (logprobs.content or []) if logprobs is not None else []


async def test_what_an_assistant_cannot_pass_on_is_refused_naming_it(deployment: Deployment, fake_llm: FakeLLM) -> None:
    token = marker()
    async with deployment.http() as http:
        for extra, param in (
            ({"response_format": {"type": "json_object"}}, "response_format"),
            ({"logprobs": True}, "logprobs"),
        ):
            body = {"model": "todo", "messages": [{"role": "user", "content": token}], **extra}
            response = await http.post(CHAT, json=body)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["param"] == param
            assert param in response.json()["error"]["message"]
        response = await http.post(CHAT, json={"model": "todo", "messages": image_message(token)})
        assert response.status_code == 400
        assert response.json()["error"]["message"] == "messages.0.content.1: the todo assistant takes text only"
    assert requests_with(fake_llm, token) == [], "nothing refused reached the model"


async def test_the_todo_assistant_passes_on_what_it_takes(deployment: Deployment, fake_llm: FakeLLM) -> None:
    token = marker()
    fields = {"seed": 3, "presence_penalty": 0.5, "logit_bias": {"7": 1}, "reasoning_effort": "low", "max_tokens": 99}
    async with deployment.http() as http:
        body = {"model": "todo", "messages": [{"role": "user", "content": f"[[reply:noted]] {token}"}], **fields}
        response = await http.post(CHAT, json=body)
        assert response.status_code == 200, response.text
    sent = only_request_with(fake_llm, token)
    assert {name: sent.get(name) for name in fields} == fields
    assert "max_completion_tokens" not in sent


def test_the_anthropic_provider_refuses_what_it_cannot_take() -> None:
    text = [ChatMessage(role="user", content="hi")]
    for name, value in (
        ("seed", 1),
        ("logprobs", True),
        ("logit_bias", {"1": 1}),
        ("response_format", {"type": "json_object"}),
    ):
        with pytest.raises(InvalidRequest) as refused:
            check_passable(provider="anthropic", assistant=MODEL, params=ModelParams(**{name: value}), messages=text)
        assert (
            refused.value.param == name
            and refused.value.message == f"{name} cannot be passed to the anthropic provider"
        )
    audio = ChatMessage.model_validate(
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}}]}
    )
    with pytest.raises(InvalidRequest, match="audio cannot be passed to the anthropic provider"):
        check_passable(provider="anthropic", assistant=MODEL, params=ModelParams(), messages=[audio])
    image = ChatMessage.model_validate(image_message("look")[0])
    check_passable(provider="anthropic", assistant=MODEL, params=ModelParams(max_tokens=5), messages=[image])
    check_passable(provider="ollama", assistant=MODEL, params=ModelParams(seed=1, logprobs=True), messages=[audio])


# --------------------------------------------------------------------------- the demo model


async def _ask_demo(body: dict[str, Any]) -> dict[str, Any]:
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=create_demo_app()), base_url="http://demo"
    ) as demo:
        response = await demo.post("/v1/chat/completions", json={"model": "demo", **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_demo_model_says_it_cannot_see_images_hear_audio_or_read_files() -> None:
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": PNG_URL}},
        {"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}},
    ]
    answer = await _ask_demo({"messages": [{"role": "user", "content": content}]})
    text = answer["choices"][0]["message"]["content"]
    assert text.startswith(
        "[demo model] I cannot see images, hear audio or read files (you sent 1 image, 1 audio clip)"
    )
    assert 'You said: "What is in this picture?"' in text


async def test_demo_model_answers_json_that_validates_against_the_schema() -> None:
    class Guest(BaseModel):
        name: str
        age: int

    class Party(BaseModel):
        title: str
        guests: list[Guest]
        host: Guest
        budget: float | None

    schema = Party.model_json_schema()
    answer = await _ask_demo(
        {
            "messages": [{"role": "user", "content": "Plan a party"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "Party", "schema": schema, "strict": True},
            },
        }
    )
    parsed = json.loads(answer["choices"][0]["message"]["content"])
    jsonschema.validate(parsed, schema)
    Party.model_validate(parsed)
    answer = await _ask_demo(
        {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}
    )
    assert isinstance(json.loads(answer["choices"][0]["message"]["content"]), dict)


async def test_demo_model_gives_logprobs_when_asked() -> None:
    answer = await _ask_demo({"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 1})
    choice = answer["choices"][0]
    entries = choice["logprobs"]["content"]
    assert "".join(entry["token"] for entry in entries) == choice["message"]["content"]
    assert all(entry["logprob"] == 0.0 and len(entry["top_logprobs"]) == 1 for entry in entries)


@pytest.mark.parametrize(
    ("raised", "code", "message"),
    [
        (ModelHTTPError(400, "m", body={"message": "bad image"}), "provider_rejected", "bad image"),
        (ModelHTTPError(422, "m", body={"error": {"message": "bad schema"}}), "provider_rejected", "bad schema"),
        (UserError("Unsupported document"), "provider_rejected", "Unsupported document"),
        (ModelHTTPError(500, "m", body={"message": "internal"}), "provider_error", "answered HTTP 500"),
        (ModelHTTPError(401, "m", body={"message": "bad key"}), "provider_error", "answered HTTP 401"),
    ],
)
def test_provider_refusals_are_the_clients_and_failures_are_not(raised: Exception, code: str, message: str) -> None:
    """A provider refusing what was sent (400, 422, or its adapter refusing before sending) is the client's to
    fix; its other failures (its credentials, its outages) are not, and do not leak its words."""
    with pytest.raises(ProviderFailure) as failed, provider_errors():
        raise raised
    assert failed.value.code == code
    assert message in failed.value.message
