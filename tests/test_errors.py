"""Error cases of the OpenAI surface: every failure is an OpenAI-shaped error with the right status.

Bad input, credentials, sizes and provider failures run against the shared `deployment`. Overload,
timeouts, a silent run and unreachable backing services need deployments of their own; those are
started together, once for this module (see `special`).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import jwt
import openai
import pytest
import pytest_asyncio

from tests._services import RedisServer, free_port
from tests.deployment import JWT_SECRET, ROOT, USERS, Deployment
from tests.fake_llm import FakeLLM
from tests.test_openai_wire import CHAT, MODEL, marker, post_stream, stream_payloads, user

ONE_MIB = 1024 * 1024
CHAT_LIMIT = 32 * ONE_MIB  # the default SWITCHBOARD_MAX_CHAT_BODY_BYTES
ERROR_KEYS = {"message", "type", "param", "code"}


def assert_error(
    response: httpx2.Response, status: int, *, type_: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The response is `status` with an OpenAI error body; returns the `error` object."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == ERROR_KEYS, error
    assert isinstance(error["message"], str) and error["message"]
    if type_ is not None:
        assert error["type"] == type_, error
    if code is not None:
        assert error["code"] == code, error
    return error


def assert_error_event(payload: dict[str, Any], code: str | None = None) -> dict[str, Any]:
    assert set(payload) == {"error"}, payload
    error = payload["error"]
    assert set(error) == ERROR_KEYS, error
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def body(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": user("[[reply:ok]]"), **fields}


def padded(size: int) -> bytes:
    """A valid request body of exactly `size` bytes (the padding is an unknown, ignored field)."""
    skeleton = json.dumps({"model": MODEL, "messages": user("[[reply:padded]]"), "padding": ""}).encode()
    pad = size - len(skeleton)
    assert pad >= 0
    return skeleton[:-2] + b"x" * pad + skeleton[-2:]


# --------------------------------------------------------------------------- 400


BAD_BODIES: list[tuple[str, bytes | dict[str, Any] | list[Any], str | None]] = [
    ("not_json", b'{"model": "assistant", "messages": [', None),
    ("empty_body", b"", None),
    ("not_utf8", b'{"model": "\xff\xfe"}', None),
    ("json_array", [{"model": MODEL}], None),
    ("json_string", b'"hello"', None),
    ("json_null", b"null", None),
    ("no_messages", {"model": MODEL}, "messages"),
    ("empty_messages", {"model": MODEL, "messages": []}, "messages"),
    ("messages_not_a_list", {"model": MODEL, "messages": "hi"}, "messages"),
    ("message_not_an_object", {"model": MODEL, "messages": ["hi"]}, "messages"),
    ("unknown_role", {"model": MODEL, "messages": [{"role": "robot", "content": "hi"}]}, "messages"),
    ("content_a_number", {"model": MODEL, "messages": [{"role": "user", "content": 42}]}, "messages"),
    ("only_system_messages", {"model": MODEL, "messages": [{"role": "system", "content": "hi"}]}, "messages"),
    ("last_message_assistant", body(messages=[*user("hi"), {"role": "assistant", "content": "yo"}]), "messages"),
    ("lone_tool_message", body(messages=[{"role": "tool", "tool_call_id": "c1", "content": "x"}]), "messages"),
    ("n_2", body(n=2), "n"),
    ("n_2_streaming", body(n=2, stream=True), "n"),
    ("no_model", {"messages": user("hi")}, "model"),
    ("model_a_number", body(model=5), "model"),
    ("temperature_a_string", body(temperature="hot"), "temperature"),
    ("temperature_too_high", body(temperature=3), "temperature"),
    ("top_p_too_high", body(top_p=1.5), "top_p"),
    ("max_tokens_zero", body(max_tokens=0), "max_tokens"),
    ("max_tokens_a_string", body(max_tokens="many"), "max_tokens"),
    ("max_completion_tokens_negative", body(max_completion_tokens=-1), "max_completion_tokens"),
    ("stream_not_a_bool", body(stream="maybe"), "stream"),
    ("stream_options_a_string", body(stream=True, stream_options="yes"), "stream_options"),
    ("stop_a_number", body(stop=7), "stop"),
    ("five_stops", body(stop=["a", "b", "c", "d", "e"]), "stop"),
    ("tools_not_a_list", body(tools="get_weather"), "tools"),
    ("tool_without_function", body(tools=[{"type": "function"}]), "tools"),
    ("tool_choice_unknown", body(tool_choice="sometimes"), "tool_choice"),
    ("parallel_tool_calls_a_list", body(parallel_tool_calls=[1]), "parallel_tool_calls"),
    ("user_a_number", body(user=12), "user"),
    ("tool_name_with_spaces", body(tools=[{"type": "function", "function": {"name": "get weather"}}]), "tools"),
    (
        "tool_call_arguments_not_a_string",
        body(
            messages=[
                *user("hi"),
                {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {"a": 1}}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "x"},
            ]
        ),
        "messages",
    ),
    ("deeply_nested_json", b"[" * 100_000 + b"]" * 100_000, None),
    ("unclosed_deep_json", b'{"model": "assistant", "messages": ' + b"[" * 100_000, None),
    ("nul_in_content", body(messages=user("before\u0000after")), None),
    ("lone_surrogate_in_content", body(messages=user("\ud800")), None),
    (
        "deep_tool_parameters",
        body(
            tools=[
                {
                    "type": "function",
                    "function": {"name": "deep", "parameters": json.loads('{"a":' * 300 + "1" + "}" * 300)},
                }
            ]
        ),
        None,
    ),
    (
        "nan_temperature",
        b'{"model": "assistant", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
        None,  # NaN is not JSON: the body is refused as a whole
    ),
]


@pytest.mark.parametrize(("raw", "param"), [(case[1], case[2]) for case in BAD_BODIES], ids=[c[0] for c in BAD_BODIES])
async def test_bad_request_is_400(
    deployment: Deployment, raw: bytes | dict[str, Any] | list[Any], param: str | None
) -> None:
    request_id = f"bad-{marker()}"
    content = raw if isinstance(raw, bytes) else json.dumps(raw).encode()
    async with deployment.http() as client:
        response = await client.post(
            CHAT, content=content, headers={"Content-Type": "application/json", "X-Request-ID": request_id}
        )
    error = assert_error(response, 400, type_="invalid_request_error")
    if param is not None:
        assert error["param"] is not None and error["param"].split(".")[0] == param, error
    assert not await deployment.query("SELECT id FROM runs WHERE request_id = :rid", rid=request_id)


async def test_overlong_conversation_id_is_400(deployment: Deployment) -> None:
    async with deployment.http() as client:
        response = await client.post(CHAT, json=body(), headers={"X-Conversation-ID": "c" * 256})
    error = assert_error(response, 400, type_="invalid_request_error")
    assert error["param"] == "x-conversation-id"


async def test_official_client_raises_bad_request(deployment: Deployment) -> None:
    client = deployment.openai()
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model=MODEL, messages=user("hi"), n=2)
    assert caught.value.status_code == 400
    assert caught.value.param == "n"
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "robot", "content": "hi"}],  # type: ignore[misc,list-item]
            stream=True,
        )


# --------------------------------------------------------------------------- 401


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer not-a-key",
        "Bearer key-alice-but-longer",
        "Bearer",
        "Bearer key-alice extra",
        "key-alice",
        "Basic a2V5LWFsaWNlOg==",
        "Token key-alice",
        "Bearer a.b.c",
        # Tokens are made when the test runs: made at collection, they could expire before it does.
        lambda: "Bearer " + jwt.encode({"sub": "alice", "exp": int(time.time()) - 60}, JWT_SECRET, algorithm="HS256"),
        lambda: (
            "Bearer "
            + jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, "not-the-secret" * 3, algorithm="HS256")
        ),
        lambda: "Bearer " + jwt.encode({"exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256"),
    ],
    ids=[
        "missing",
        "unknown_key",
        "key_prefix",
        "no_credential",
        "extra_word",
        "no_scheme",
        "basic",
        "token",
        "bad_jwt",
        "expired_jwt",
        "jwt_wrong_secret",
        "jwt_without_subject",
    ],
)
async def test_bad_credentials_are_401(deployment: Deployment, authorization: str | Callable[[], str] | None) -> None:
    if callable(authorization):
        authorization = authorization()
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with deployment.http(user=None) as client:
        chat = await client.post(CHAT, json=body(), headers=headers)
        models = await client.get("/v1/models", headers=headers)
        # Credentials are checked before the body: a bad body gets 401, not 400.
        bad_body = await client.post(CHAT, content=b"{nope", headers=headers)
    for response in (chat, models, bad_body):
        assert_error(response, 401, type_="authentication_error")
        assert response.headers.get("www-authenticate", "").lower().startswith("bearer")


async def test_official_client_raises_authentication_error(deployment: Deployment) -> None:
    client = openai.AsyncOpenAI(base_url=f"{deployment.base_url}/v1", api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        await client.chat.completions.create(model=MODEL, messages=user("hi"))
    assert caught.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        await client.models.list()
    await client.close()


# --------------------------------------------------------------------------- 404


async def test_unknown_model_is_404(deployment: Deployment) -> None:
    async with deployment.http() as client:
        response = await client.post(CHAT, json=body(model="gpt-4o"))
        streaming = await client.post(CHAT, json=body(model="gpt-4o", stream=True))
    for result in (response, streaming):
        error = assert_error(result, 404, type_="invalid_request_error", code="model_not_found")
        assert error["param"] == "model"
    with pytest.raises(openai.NotFoundError) as caught:
        await deployment.openai().chat.completions.create(model="no-such-assistant", messages=user("hi"))
    assert caught.value.code == "model_not_found"


async def test_unknown_route_and_wrong_method_are_json_errors(deployment: Deployment) -> None:
    async with deployment.http() as client:
        missing = await client.get("/v1/nothing-here")
        wrong_method = await client.get(CHAT)
    assert_error(missing, 404)
    assert_error(wrong_method, 405)


# --------------------------------------------------------------------------- 413


async def test_body_at_the_limit_is_accepted(deployment: Deployment) -> None:
    # A chat completion's limit is SWITCHBOARD_MAX_CHAT_BODY_BYTES: its images, audio and files come inline.
    async with deployment.http() as client:
        response = await client.post(CHAT, content=padded(CHAT_LIMIT), headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "padded"


async def test_other_bodies_keep_the_smaller_limit(deployment: Deployment) -> None:
    content = json.dumps({"message": "hi", "padding": "x" * ONE_MIB}).encode()
    async with deployment.http() as client:
        response = await client.post("/api/alice/chat", content=content, headers={"Content-Type": "application/json"})
    assert_error(response, 413, type_="invalid_request_error", code="payload_too_large")


async def test_oversize_body_is_413(deployment: Deployment) -> None:
    content = padded(CHAT_LIMIT + 1)
    async with deployment.http() as client:
        declared = await client.post(CHAT, content=content, headers={"Content-Type": "application/json"})

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the server must count
            for start in range(0, len(content), 64 * 1024):
                yield content[start : start + 64 * 1024]

        chunked = await client.post(CHAT, content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in chunked.request.headers
    for response in (declared, chunked):
        assert_error(response, 413, type_="invalid_request_error", code="payload_too_large")


# --------------------------------------------------------------------------- provider failures


async def test_provider_error_is_502(deployment: Deployment) -> None:
    async with deployment.http() as client:
        response = await client.post(CHAT, json=body(messages=user("[[error:500]]")))
        unavailable = await client.post(CHAT, json=body(messages=user("[[error:503]]")))
    assert_error(response, 502, code="provider_error")
    assert_error(unavailable, 502, code="provider_error")
    with pytest.raises(openai.InternalServerError) as caught:
        await deployment.openai().chat.completions.create(model=MODEL, messages=user("[[error:500]]"))
    assert caught.value.status_code == 502


async def test_failed_run_still_names_its_conversation(deployment: Deployment) -> None:
    """The turn is stored before the run fails, so the error response must say where."""
    given = f"conv-{marker()}"
    fresh_text = f"[[error:500]] {marker()}"
    async with deployment.http() as client:
        echoed = await client.post(
            CHAT, json=body(messages=user("[[error:500]]")), headers={"X-Conversation-ID": given}
        )
        fresh = await client.post(CHAT, json=body(messages=user(fresh_text)))
    assert_error(echoed, 502, code="provider_error")
    assert_error(fresh, 502, code="provider_error")
    assert echoed.headers.get("x-conversation-id") == given
    new_id = fresh.headers.get("x-conversation-id")
    assert new_id, "a 502 for a new conversation does not name the conversation its turn was stored in"
    assert [(m["role"], m["content"]) for m in await deployment.messages("alice", new_id)] == [("user", fresh_text)]


async def test_provider_dropping_the_connection_is_502(deployment: Deployment) -> None:
    async with deployment.http() as client:
        response = await client.post(CHAT, json=body(messages=user("[[midstream_error]] cut me off")))
    assert_error(response, 502, code="provider_error")


async def test_provider_error_while_streaming_is_an_error_event(deployment: Deployment) -> None:
    async with deployment.http() as client:
        response, raw = await post_stream(client, {"messages": user("[[error:500]]")})
    assert response.status_code == 200
    payloads = stream_payloads(raw)
    assert_error_event(payloads[-1], code="provider_error")
    for payload in payloads[:-1]:
        assert payload["object"] == "chat.completion.chunk"
        assert payload["choices"][0]["finish_reason"] is None


async def test_midstream_failure_is_a_final_error_event(deployment: Deployment) -> None:
    token = marker()
    async with deployment.http() as client:
        response, raw = await post_stream(client, {"messages": user(f"[[midstream_error]] {token}")})
    assert response.status_code == 200
    payloads = stream_payloads(raw)
    assert_error_event(payloads[-1], code="provider_error")
    chunks = payloads[:-1]
    assert chunks, "the part streamed before the failure is missing"
    assert all("error" not in chunk for chunk in chunks)
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    assert text and f"echo: {token}".startswith(text)


async def test_official_client_raises_on_stream_error_event(deployment: Deployment) -> None:
    stream = await deployment.openai().chat.completions.create(
        model=MODEL, messages=user("[[midstream_error]] partial"), stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert not isinstance(caught.value, openai.APIStatusError)
    assert "".join(received)
    assert isinstance(caught.value.body, dict) and caught.value.body.get("code")


# --------------------------------------------------------------------------- special deployments


@dataclass
class ApiProcess:
    """A second `switchboard api` process, with settings of its own, driven only over HTTP."""

    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    @classmethod
    def spawn(cls, env: dict[str, str], log: Path) -> ApiProcess:
        port = free_port()
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "switchboard", "api", "--port", str(port)],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=out,
            )
        return cls(process=process, base_url=f"http://127.0.0.1:{port}", log=log)

    async def wait_listening(self, timeout_s: float = 30.0) -> ApiProcess:
        deadline = time.monotonic() + timeout_s
        async with httpx2.AsyncClient() as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"api exited with {self.process.returncode}:\n{self.log.read_text()}")
                try:
                    if (await client.get(f"{self.base_url}/healthz")).status_code == 200:
                        return self
                except httpx2.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"api did not start:\n{self.log.read_text()}")
                await asyncio.sleep(0.05)

    def http(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            base_url=self.base_url, headers={"Authorization": f"Bearer {USERS['alice']}"}, timeout=30
        )

    async def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait, 5)


@dataclass
class Special:
    limited: Deployment  # one run in flight at most; runs time out after 1 s
    workerless: Deployment  # no worker at all: every run stays silent
    redis_gone: ApiProcess  # its Redis was stopped after it started
    no_database: ApiProcess  # its database URL points at a closed port
    enqueue_refused: ApiProcess  # its Redis lets it subscribe but refuses the enqueue script


# A Redis whose only user may do anything but run scripts: the API's enqueue is a script, its
# subscriptions and everything else are not, so each turn is stored and then cannot be enqueued.
NO_SCRIPTS = ("--user", "default", "on", "nopass", "~*", "&*", "+@all", "-@scripting")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def special(
    postgres_url: str, redis_url: str, fake_llm: FakeLLM, tmp_path_factory: Any
) -> AsyncIterator[Special]:
    logs = tmp_path_factory.mktemp("special-apis")
    limited = Deployment(
        database=postgres_url,
        redis_url=redis_url,
        llm_base_url=fake_llm.base_url,
        env={
            "SWITCHBOARD_MAX_INFLIGHT_RUNS": "1",
            "SWITCHBOARD_RUN_TIMEOUT_S": "1",
            "SWITCHBOARD_WORKER_GRACE_S": "1",
        },
    )
    workerless = Deployment(
        database=postgres_url,
        redis_url=redis_url,
        llm_base_url=fake_llm.base_url,
        env={"SWITCHBOARD_RUN_TIMEOUT_S": "1", "SWITCHBOARD_RELAY_GRACE_S": "0.5"},
        start_worker=False,
    )
    private_redis = await asyncio.to_thread(RedisServer().start)
    scriptless_redis = RedisServer(*NO_SCRIPTS)
    apis: list[ApiProcess] = []
    try:
        await asyncio.to_thread(scriptless_redis.start)
        # One at a time: running two migrations at once in this process is not safe.
        await workerless.start()
        base_env = dict(workerless.env)
        enqueue_refused = ApiProcess.spawn(
            {**base_env, "SWITCHBOARD_REDIS_URL": scriptless_redis.url}, logs / "scriptless.log"
        )
        apis.append(enqueue_refused)
        redis_gone = ApiProcess.spawn({**base_env, "SWITCHBOARD_REDIS_URL": private_redis.url}, logs / "redis.log")
        apis.append(redis_gone)
        dead_db = f"postgresql+asyncpg://switchboard@127.0.0.1:{free_port()}/switchboard_nowhere"
        no_database = ApiProcess.spawn({**base_env, "SWITCHBOARD_DATABASE_URL": dead_db}, logs / "db.log")
        apis.append(no_database)
        await limited.start()
        await asyncio.gather(*(api.wait_listening() for api in apis))
        async with httpx2.AsyncClient() as client:
            ready = await client.get(f"{redis_gone.base_url}/readyz")
            assert ready.json()["missing"] == ["workers"], ready.text
        await asyncio.to_thread(private_redis.stop)
        yield Special(
            limited=limited,
            workerless=workerless,
            redis_gone=redis_gone,
            no_database=no_database,
            enqueue_refused=enqueue_refused,
        )
    finally:
        await asyncio.to_thread(private_redis.stop)
        await asyncio.to_thread(scriptless_redis.stop)
        for api in apis:
            await api.stop()
        await asyncio.gather(limited.stop(), workerless.stop())


async def test_overloaded_is_429(special: Special) -> None:
    deployment = special.limited
    async with deployment.http() as client:
        # Park one run: the fake LLM never answers, so it holds the only slot until the run times out.
        async with client.stream("POST", CHAT, json=body(stream=True, messages=user("[[hang]]"))) as parked:
            assert parked.status_code == 200
            refused = await client.post(CHAT, json=body())
            refused_stream = await client.post(CHAT, json=body(stream=True))
            with pytest.raises(openai.RateLimitError) as caught:
                await deployment.openai().chat.completions.create(model=MODEL, messages=user("hi"))
            raw = await asyncio.wait_for(parked.aread(), 15)
        for response in (refused, refused_stream):
            assert_error(response, 429, type_="rate_limit_error", code="overloaded")
        assert caught.value.status_code == 429
        # The parked stream ended with the run's timeout, as an error event.
        payloads = stream_payloads(raw)
        assert_error_event(payloads[-1], code="run_timeout")
        # Its slot is free again.
        after = await client.post(CHAT, json=body())
    assert after.status_code == 200, after.text
    assert after.json()["choices"][0]["message"]["content"] == "ok"


async def test_run_timeout_is_504(special: Special) -> None:
    request_id = f"timeout-{marker()}"
    with pytest.raises(openai.InternalServerError) as caught:
        # A hang guard far below the default run timeout (300 s): only the deployment's 1 s can end it.
        await asyncio.wait_for(
            special.limited.openai().chat.completions.create(
                model=MODEL, messages=user("[[hang]]"), extra_headers={"X-Request-ID": request_id}
            ),
            15,
        )
    assert caught.value.status_code == 504
    error = assert_error(caught.value.response, 504, type_="timeout_error")
    assert error["code"] in ("run_timeout", "provider_timeout")
    # The run itself ended that way, not just the wait for it.
    [run] = await special.limited.wait_for(
        "SELECT error_code, error FROM runs WHERE request_id = :rid AND status = 'failed'", rid=request_id
    )
    assert run["error_code"] == error["code"] and run["error"], run


async def test_silent_run_ends_the_relay(special: Special) -> None:
    deployment = special.workerless

    async def streaming() -> tuple[httpx2.Response, bytes, float]:
        started = time.monotonic()
        async with deployment.http() as client:
            response, raw = await post_stream(client, {"messages": user("nobody will answer")})
        return response, raw, time.monotonic() - started

    async def non_streaming() -> tuple[httpx2.Response, float]:
        started = time.monotonic()
        async with deployment.http() as client:
            response = await client.post(CHAT, json=body(messages=user("nobody will answer either")))
        return response, time.monotonic() - started

    (response, raw, stream_s), (plain, plain_s) = await asyncio.wait_for(
        asyncio.gather(streaming(), non_streaming()), 20
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = stream_payloads(raw)
    assert len(payloads) == 1, payloads
    assert_error_event(payloads[0], code="run_timeout")
    assert_error(plain, 504, type_="timeout_error", code="run_timeout")
    # Not before the run timeout plus the grace (1 + 0.5 s); that it ends at all, long before the
    # default timeout (300 s), the hang guard above shows.
    for elapsed in (stream_s, plain_s):
        assert elapsed >= 1.4, elapsed


async def test_redis_unreachable_is_503(special: Special) -> None:
    api = special.redis_gone
    request_id = f"no-redis-{marker()}"
    async with api.http() as client:
        response = await asyncio.wait_for(client.post(CHAT, json=body(), headers={"X-Request-ID": request_id}), 20)
        streaming = await asyncio.wait_for(client.post(CHAT, json=body(stream=True)), 20)
        ready = await client.get("/readyz")
        health = await client.get("/healthz")
    assert_error(response, 503, code="service_unavailable")
    assert_error(streaming, 503, code="service_unavailable")
    assert ready.status_code == 503
    assert ready.json()["redis"] == "unreachable" and ready.json()["database"] == "ok"
    assert ready.headers["Retry-After"]
    assert health.status_code == 200
    # Either the turn was refused before it was recorded, or it was recorded and its run marked
    # failed; never a run that looks as if it were still queued.
    runs = await special.workerless.query("SELECT status FROM runs WHERE request_id = :rid", rid=request_id)
    assert [row["status"] for row in runs] in ([], ["failed"])


async def test_an_enqueue_refused_after_the_commit_fails_the_run_and_is_503(special: Special) -> None:
    """The turn is committed and the subscription confirmed; then Redis refuses the job. The run is marked
    failed (it must not look queued forever), and the client is told to come back."""
    api = special.enqueue_refused
    plain_id, stream_id = f"refused-{marker()}", f"refused-stream-{marker()}"
    async with api.http() as client:
        plain = await asyncio.wait_for(client.post(CHAT, json=body(), headers={"X-Request-ID": plain_id}), 20)
        streaming = await asyncio.wait_for(
            client.post(CHAT, json=body(stream=True), headers={"X-Request-ID": stream_id}), 20
        )
    for response in (plain, streaming):
        assert_error(response, 503, code="service_unavailable")
        assert int(response.headers["Retry-After"]) > 0, response.headers
    for request_id in (plain_id, stream_id):
        [run] = await special.workerless.query(
            "SELECT id, status, error_code, error FROM runs WHERE request_id = :rid", rid=request_id
        )
        assert (run["status"], run["error_code"]) == ("failed", "service_unavailable"), run
        assert run["error"], run
        # It was refused after the commit: the user's turn is stored with its run.
        turn = await special.workerless.query("SELECT role FROM messages WHERE run_id = :id", id=run["id"])
        assert turn == [{"role": "user"}]


async def test_database_unreachable_is_503(special: Special) -> None:
    api = special.no_database
    async with api.http() as client:
        response = await asyncio.wait_for(client.post(CHAT, json=body()), 20)
        streaming = await asyncio.wait_for(client.post(CHAT, json=body(stream=True)), 20)
        ready = await client.get("/readyz")
        models = await client.get("/v1/models")
    assert_error(response, 503, code="service_unavailable")
    assert_error(streaming, 503, code="service_unavailable")
    assert ready.status_code == 503
    assert ready.json()["database"] == "unreachable" and ready.json()["redis"] == "ok"
    assert models.status_code == 200  # what needs no database still works
    async with openai.AsyncOpenAI(base_url=f"{api.base_url}/v1", api_key=USERS["alice"], max_retries=0) as sdk:
        with pytest.raises(openai.InternalServerError) as caught:
            await sdk.chat.completions.create(model=MODEL, messages=user("hi"))
    assert caught.value.status_code == 503
