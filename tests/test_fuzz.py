"""Fuzzing every HTTP surface (issue 10): bad input never gets a 5xx.

schemathesis reads the deployment's own `/openapi.json` and generates requests for every operation in
it, valid ones and invalid ones, which go over real HTTP to a deployment of this test's own (real API
and worker processes, PostgreSQL, Redis, the fake LLM); hand-made nasty requests go with them. Any 5xx,
any connection dropped or left unanswered, and any crash the deployment logs whatever it answered (a
stream or a run that crashed, an MCP tool that raised: the SDK answers those with a tool result) fails
the test, which names each request that did it and the server's traceback from its log.

Ids the server hands out (runs, conversations) are fed back into later requests' paths and headers, so
the fuzzer reaches real runs' event streams, cancels and deletes, not only 404s. The per-user caps are
lifted: one user sends everything, and 429s would hide the routes behind them.

`SWITCHBOARD_FUZZ_SEED=N` repeats a run's generation (the seed is printed on failure);
`SWITCHBOARD_FUZZ_EXAMPLES=N` draws N cases per operation and mode instead of 100.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import queue
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import httpx2
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup

from tests.conftest import DeployFactory
from tests.deployment import USERS, Deployment

USER = "alice"
AUTHORIZATION = f"Bearer {USERS[USER]}"
ENV = {
    # The fuzzer's key may name end users (X-OpenWebUI-User-Id), so that path is fuzzed too.
    "SWITCHBOARD_TRUSTED_FRONTEND_KEYS": USERS[USER],
    # One user sends every request: nothing may be refused for load, or the routes behind it go untested.
    "SWITCHBOARD_MAX_ACTIVE_RUNS_PER_USER": "100000",
    "SWITCHBOARD_MAX_QUEUED_RUNS": "100000",
    "SWITCHBOARD_MAX_INFLIGHT_RUNS": "100000",
}
MIN_CASES = 3000
pytestmark = pytest.mark.timeout(600)
# Generated cases per operation and mode (operations with nothing to vary run out sooner);
# SWITCHBOARD_FUZZ_EXAMPLES=N makes a longer run (give pytest a --timeout to match).
EXAMPLES_PER_MODE = int(os.environ.get("SWITCHBOARD_FUZZ_EXAMPLES") or 100)
EXAMPLES = {GenerationMode.POSITIVE: EXAMPLES_PER_MODE, GenerationMode.NEGATIVE: EXAMPLES_PER_MODE}
THREADS = 6
REQUEST_TIMEOUT_S = 30
MCP_ACCEPT = "application/json, text/event-stream"
END_USER_HEADERS = ("X-OpenWebUI-User-Id", "X-Switchboard-User")
MCP_TOOLS = ["add_task", "list_tasks", "complete_task", "delete_task", "update_task"]
TOOL_ARGUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "task_id": st.integers() | st.floats() | st.text(max_size=5) | st.none(),
        "title": st.text(max_size=250) | st.none(),
        "description": st.text(max_size=60) | st.none(),
        "status": st.sampled_from(["all", "pending", "completed"]) | st.text(max_size=5),
    },
)
# Operations that take no input and never end: nothing to fuzz, and each case would hold a sender.
NOT_FUZZED = {"GET /mcp"}


@dataclass(frozen=True, kw_only=True)
class Exchange:
    """One request, as sent, and what came of it."""

    operation: str
    request_id: str
    request: str
    outcome: str


@dataclass(kw_only=True)
class Fuzzer:
    """Sends requests from several threads and keeps each exchange, which failed, and the ids it was given."""

    base_url: str
    exchanges: dict[str, Exchange] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)  # request ids: 5xx or no answer
    run_ids: list[str] = field(default_factory=list)
    conversation_ids: list[str] = field(default_factory=list)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _numbers: Iterator[int] = field(default_factory=itertools.count)
    _local: threading.local = field(default_factory=threading.local)

    @property
    def sent(self) -> int:
        return len(self.exchanges)

    @property
    def session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        session: requests.Session = self._local.session
        return session

    def next_request_id(self) -> str:
        with self._lock:
            return f"fuzz-{next(self._numbers)}"

    def record(
        self, exchange: Exchange, *, failed: bool, status: int | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        """Keep the exchange, and the run and conversation its response names (`headers` in any case)."""
        run_id = headers.get("x-run-id") if headers else None
        conversation = headers.get("x-conversation-id") if headers else None
        with self._lock:
            self.exchanges[exchange.request_id] = exchange
            if failed:
                self.failed.append(exchange.request_id)
            if status is not None:
                self.statuses[(exchange.operation.split(" (")[0], status)] += 1
            if run_id:
                self.run_ids.append(run_id)
            if conversation:
                self.conversation_ids.append(conversation)

    def send_case(self, case: schemathesis.Case, operation: str) -> None:
        request_id = self.next_request_id()
        headers = {"Authorization": AUTHORIZATION, "X-Request-ID": request_id}
        if case.path == "/mcp":
            headers["Accept"] = MCP_ACCEPT
        try:
            response = case.call(
                base_url=self.base_url, session=self.session, headers=headers, timeout=REQUEST_TIMEOUT_S
            )
        except requests.RequestException as exc:
            sent = exc.request if isinstance(exc.request, requests.PreparedRequest) else None
            shown = _prepared(sent) if sent is not None else f"{case.method} {case.formatted_path} body={case.body!r}"
            exchange = Exchange(operation=operation, request_id=request_id, request=shown, outcome=_dropped(exc))
            self.record(exchange, failed=True)
            return
        try:
            case.validate_response(response, checks=[not_a_server_error])
            failed = False
        except FailureGroup:
            failed = True
        self.record(
            Exchange(
                operation=operation,
                request_id=request_id,
                request=_prepared(response.request),
                outcome=f"HTTP {response.status_code}: {response.content[:160]!r}",
            ),
            failed=failed,
            status=response.status_code,
            headers={name: values[0] for name, values in response.headers.items() if values},
        )

    def send_raw(self, method: str, path: str, *, headers: dict[str, Any] | None = None, body: Any = None) -> None:
        """A hand-made request: `body` is JSON unless it is bytes, sent as they are."""
        request_id = self.next_request_id()
        all_headers = {"Authorization": AUTHORIZATION, "X-Request-ID": request_id, **(headers or {})}
        if body is not None:
            all_headers.setdefault("Content-Type", "application/json")
            if not isinstance(body, bytes):
                body = json.dumps(body).encode()
        request = requests.Request(method, self.base_url + path, headers=all_headers, data=body).prepare()
        exchange = Exchange(
            operation=f"hand-made {method} {path.split('?')[0]}",
            request_id=request_id,
            request=_prepared(request),
            outcome="",
        )
        try:
            try:
                response = self.session.send(request, timeout=REQUEST_TIMEOUT_S)
            except requests.ConnectionError:
                # The server may have closed this kept-alive connection after its last answer (it does after
                # a 500): as browsers and curl do, and as schemathesis does, send once more on a new one.
                self.session.close()
                del self._local.session
                response = self.session.send(request, timeout=REQUEST_TIMEOUT_S)
        except requests.RequestException as exc:
            self.record(replace(exchange, outcome=_dropped(exc)), failed=True)
            return
        status = response.status_code
        outcome = f"HTTP {status}: {response.content[:160]!r}"
        self.record(replace(exchange, outcome=outcome), failed=status >= 500, status=status, headers=response.headers)


def _prepared(request: requests.PreparedRequest) -> str:
    headers = {
        name: value
        for name, value in request.headers.items()
        if name.lower() not in BORING_HEADERS and name.lower() != "authorization"
    }
    body = request.body
    if isinstance(body, str):
        body = body.encode()
    shown = f"{request.method} {request.url}\n    headers: {headers}"
    if body:
        shown += f"\n    body: {body[:600]!r}{'...' if len(body) > 600 else ''}"
    return shown


def _dropped(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return f"no answer within {REQUEST_TIMEOUT_S} s: {exc!r}"
    return f"connection dropped: {exc!r}"


# ------------------------------------------------------------------ generated cases


def fuzz_operation(
    fuzzer: Fuzzer,
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    *,
    examples: int,
    run_seed: int,
    send: Callable[[Callable[[], None]], None],
) -> None:
    """Draw `examples` cases of one operation in one mode, and hand each to `send` as soon as it is drawn.

    Drawing happens in one thread only: hypothesis and CPython 3.11's `ast` (which hypothesis uses to
    describe strategies) are not safe to drive from several threads at once.
    """
    strategy = operation.as_strategy(generation_mode=mode)
    label = f"{operation.label} ({mode.value})"

    @seed(run_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, data=st.data())
    def draw(case: schemathesis.Case, data: st.DataObject) -> None:
        _feed_ids(fuzzer, case, data)
        send(lambda: fuzzer.send_case(case, label))

    try:
        draw()
    except Unsatisfiable:
        # Nothing to make invalid: no parameters, no body, or only ones whose every value is valid.
        if mode is not GenerationMode.NEGATIVE:
            raise


def _feed_ids(fuzzer: Fuzzer, case: schemathesis.Case, data: st.DataObject) -> None:
    """Always act as the caller in `{user_id}` (anyone else is a 403 and no more). Half the time, aim
    deeper: as the key's own user, name a run or conversation the server made, an assistant that
    exists, a turn that ends with the user's message, and a fresh idempotency key (hypothesis favours a
    few small values, and a key reused for another request is only ever a 422)."""
    params = case.path_parameters or {}
    if "user_id" in params:
        # `me` whoever the caller is; the key's own user, unless the request names an end user.
        params["user_id"] = data.draw(st.sampled_from(["me", USER]), label="user_id")
    if not data.draw(st.booleans(), label="aim deeper"):
        return
    pick = data.draw(st.integers(min_value=0, max_value=10**6), label="which id")
    run_id = fuzzer.run_ids[pick % len(fuzzer.run_ids)] if fuzzer.run_ids else None
    conversation = fuzzer.conversation_ids[pick % len(fuzzer.conversation_ids)] if fuzzer.conversation_ids else None
    if "model_id" in params:
        params["model_id"] = data.draw(st.sampled_from(["assistant", "todo"]), label="model")
    if "run_id" in params and run_id:
        params["run_id"] = run_id
    if "completion_id" in params and run_id:
        params["completion_id"] = "chatcmpl-" + run_id.removeprefix("run_")
    if "conversation_id" in params and conversation:
        params["conversation_id"] = conversation
    if case.path == "/api/{user_id}/chat" and data.draw(st.booleans(), label="as events"):
        case.headers = {**(case.headers or {}), "Accept": "text/event-stream"}
    if case.headers:
        if "Idempotency-Key" in case.headers:
            case.headers["Idempotency-Key"] = f"fuzz-{pick}-{len(fuzzer.run_ids)}"
        # As the key's own user, who made the runs and conversations named above.
        for name in END_USER_HEADERS:
            case.headers.pop(name, None)
    body = case.body
    if not isinstance(body, dict):
        return
    if case.path == "/v1/chat/completions":
        body["model"] = data.draw(st.sampled_from(["assistant", "todo"]), label="model")
        turn = {"role": "user", "content": data.draw(st.text(max_size=40), label="user says")}
        messages = body.get("messages")
        if isinstance(messages, list) and data.draw(st.booleans(), label="keep the history"):
            messages.append(turn)
        else:
            body["messages"] = [turn]
    if "conversation_id" in body and conversation:
        body["conversation_id"] = conversation
    params_in_body = body.get("params")
    if isinstance(params_in_body, dict) and "thread_id" in params_in_body and conversation:
        params_in_body["thread_id"] = conversation
    if case.path == "/mcp" and body.get("method") == "tools/call" and isinstance(params_in_body, dict):
        params_in_body["name"] = data.draw(st.sampled_from(MCP_TOOLS), label="tool")
        params_in_body["arguments"] = data.draw(TOOL_ARGUMENTS, label="arguments")


# ------------------------------------------------------------------ hand-made cases


def _cursor(parts: str) -> str:
    return base64.urlsafe_b64encode(parts.encode()).decode().rstrip("=")


BAD_CURSORS = [
    _cursor('["abc"]'),
    _cursor("[[1]]"),
    _cursor("[1e400]"),
    _cursor(f"[{10**25}]"),
    _cursor(f"[-{10**25}]"),
    _cursor('["2024-01-01T00:00:00", "x"]'),
    _cursor(f'["2024-01-01T00:00:00", {10**25}]'),
    _cursor('["not a time", 1]'),
    _cursor("[null, null]"),
    _cursor("{}"),
    _cursor('"\\u0000"'),
    "!!!",
    "%00",
    "",
]
BAD_NUMBERS = ["²", "٣", "0", "-1", "201", "1e3", " 5", "99999999999999999999999", "NaN", "\x00"]


def hand_made(fuzzer: Fuzzer) -> list[Callable[[], None]]:
    """Requests the issue names, and their relatives: NUL, unpaired surrogates, odd digits, forged cursors."""
    send = fuzzer.send_raw
    me = f"/api/{USER}"
    cases: list[Callable[[], None]] = []

    def add(method: str, path: str, **kwargs: Any) -> None:
        cases.append(lambda: send(method, path, **kwargs))

    for number in BAD_NUMBERS:
        for path in ("/v1/runs", f"{me}/tasks", f"{me}/conversations", f"{me}/conversations/x/messages"):
            add("GET", f"{path}?limit={requests.utils.quote(number)}")
        add("GET", f"/v1/runs/run_x/events?after={requests.utils.quote(number)}")
        add("GET", "/v1/runs/run_x/events", headers={"Last-Event-ID": number.strip().encode()})
    for cursor in BAD_CURSORS:
        for path, name in (
            ("/v1/runs", "after"),
            (f"{me}/tasks", "cursor"),
            (f"{me}/conversations", "cursor"),
            (f"{me}/conversations/x/messages", "cursor"),
        ):
            add("GET", f"{path}?{name}={cursor}")
    for key in ("a%00b", "%00", "a%2Fb", "%C3%A9", "%ED%A0%80", "x" * 300):
        add("GET", f"{me}/conversations/{key}/messages")
        add("DELETE", f"{me}/conversations/{key}")
        add("GET", f"/v1/runs/{key}")
        add("GET", f"/v1/runs/{key}/events")
        add("POST", f"/v1/runs/{key}/cancel")
        add("GET", f"/v1/runs?conversation_id={key}")
        add("GET", f"/v1/models/{key}")
    nul, surrogate = b'"a\\u0000b"', b'"a\\ud800b"'
    for text in (nul, surrogate):
        add("POST", f"{me}/chat", body=b'{"message": %s}' % text)
        add("POST", f"{me}/chat", body=b'{"message": "hi", "conversation_id": %s}' % text)
        add(
            "POST",
            "/v1/chat/completions",
            body=b'{"model": "assistant", "messages": [{"role": "user", "content": %s}]}' % text,
        )
        add(
            "POST",
            "/v1/chat/completions",
            body=b'{"model": "assistant", "messages": [{"role": "user", "content": "hi", "name": %s}]}' % text,
        )
        add("POST", "/chatkit", body=b'{"type": "threads.get_by_id", "params": {"thread_id": %s}}' % text)
        add("POST", "/chatkit", body=b'{"type": "threads.update", "params": {"thread_id": "t", "title": %s}}' % text)
        add(
            "POST",
            "/chatkit",
            body=b'{"type": "threads.create", "params": {"input": {"content": [{"type": "input_text", "text": %s}],'
            b' "attachments": [], "inference_options": {}}}}' % text,
        )
        add("POST", "/chatkit", body=b'{"type": "threads.list", "params": {"after": %s}}' % text)
        add("POST", "/chatkit", body=b'{"type": "items.list", "params": {"thread_id": "t", "after": %s}}' % text)
        add("POST", "/chatkit", body=b'{"type": "threads.list", "params": {}, "metadata": {"k": %s}}' % text)
        for tool, args in (
            ("add_task", b'{"title": %s}' % text),
            ("add_task", b'{"title": "t", "description": %s}' % text),
            ("update_task", b'{"task_id": 1, "title": %s}' % text),
            ("list_tasks", b'{"status": %s}' % text),
        ):
            body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "%s", "arguments": %s}}'
            add("POST", "/mcp", headers={"Accept": MCP_ACCEPT}, body=body % (tool.encode(), args))
    for number in (10**25, -(10**25), 2**63, 1e400, -1, 0, "1", None, [1], True):
        for tool in ("complete_task", "delete_task", "update_task"):
            call = {"name": tool, "arguments": {"task_id": number, "title": "t"}}
            add(
                "POST",
                "/mcp",
                headers={"Accept": MCP_ACCEPT},
                body={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call},
            )
        add("POST", "/chatkit", body={"type": "threads.list", "params": {"limit": number}})
        add("POST", f"{me}/chat", body={"message": "hi", "conversation_id": number})
        add(
            "POST",
            "/v1/chat/completions",
            body={"model": "assistant", "messages": [{"role": "user", "content": "hi"}], "max_tokens": number},
        )
    for raw in (b"{", b"[]", b"null", b'"x"', b"\xff\xfe", b'{"a": NaN}', b"[" * 10000 + b"]" * 10000, b'{"a": 1e400}'):
        for path in ("/v1/chat/completions", f"{me}/chat", "/chatkit"):
            add("POST", path, body=raw)
        add("POST", "/mcp", headers={"Accept": MCP_ACCEPT}, body=raw)
    for header, value in (
        ("X-Conversation-ID", "a/b"),
        ("X-Conversation-ID", "é".encode()),
        ("X-Conversation-ID", b"\xff"),
        ("X-Conversation-ID", "a\tb"),
        ("X-OpenWebUI-Chat-Id", "é".encode()),
        ("Idempotency-Key", "é".encode()),
        ("X-Conversation-Policy", "ñ".encode()),
        ("Authorization", f"{AUTHORIZATION}\u00a0".encode()),
        ("Authorization", b"Bearer \xff"),
        ("Authorization", "Bearer a.b.c"),
    ):
        add(
            "POST",
            "/v1/chat/completions",
            headers={header: value},
            body={"model": "assistant", "messages": [{"role": "user", "content": "hi"}]},
        )
        add("POST", f"{me}/chat", headers={header: value}, body={"message": "hi"})
        add(
            "POST",
            "/mcp",
            headers={header: value, "Accept": MCP_ACCEPT},
            body={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        )
    return cases


# ------------------------------------------------------------------ the test


@dataclass(frozen=True, kw_only=True)
class ServerError:
    """What the API logged about one crashed request: where in our code, and the error."""

    where: str  # the innermost frame of our own code
    error: str  # the last exception's line, and what caused it, if anything did
    frames: str  # our own frames, innermost last


def logged_crashes(log_text: str) -> dict[str, ServerError]:
    """Request id -> what a process logged when our code crashed on that request, whatever the client
    was answered: a route or a stream that raised, a run that crashed, an MCP tool that raised (the SDK
    answers those with a tool result, not a 5xx).

    A crash logged outside the request's context carries no request id: it belongs to the request
    whose line comes just before it (nothing awaits between the two).
    """
    found: dict[str, ServerError] = {}
    last_request_id = ""
    for line in log_text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        request_id = record.get("request_id") or last_request_id
        last_request_id = request_id
        event = str(record.get("event"))
        if (event in CRASH_EVENTS or TOOL_CRASH.fullmatch(event)) and request_id not in found:
            found[request_id] = _server_error(record)
    return found


def _server_error(record: dict[str, Any]) -> ServerError:
    if "exception" in record:
        return _parse_traceback(record["exception"])
    # The standard library's loggers (the MCP SDK's) leave the exception unformatted.
    exc_info = record.get("exc_info")
    error = exc_info[1] if isinstance(exc_info, list) and len(exc_info) > 1 else str(record.get("error", ""))
    return ServerError(where=str(record.get("logger", "")), error=f"{record['event']}: {error}", frames="")


def _parse_traceback(text: str) -> ServerError:
    sections = [section for section in text.split("Traceback (most recent call last):") if section.strip()]
    lines = sections[-1].rstrip().splitlines() if sections else []
    frames: list[str] = []
    for number, line in enumerate(lines):
        if line.startswith('  File "') and "site-packages" not in line and "request_id.py" not in line:
            code = lines[number + 1].strip() if number + 1 < len(lines) else ""
            frames.append(f"{line.strip()}: {code}")
    error = _error_line(lines)
    if len(sections) > 1:
        error += f" (from {_error_line(sections[-2].rstrip().splitlines())})"
    where = frames[-1].split(", in ")[0] if frames else ""
    return ServerError(where=where, error=error, frames="\n        ".join(frames))


def _error_line(lines: list[str]) -> str:
    """The exception's own line: the last that is not indented, not a frame, not a chaining note."""
    for line in reversed(lines):
        if (
            line
            and not line[0].isspace()
            and ":" in line
            and not line.startswith(("During handling", "The above", "("))
        ):
            return line
    return lines[-1] if lines else ""


# What our code logs when it crashed, whatever the client was answered.
CRASH_EVENTS = {"request.crashed", "stream.crashed", "run.crashed"}
TOOL_CRASH = re.compile(r"Tool '.+' raised an unexpected exception")
BORING_HEADERS = {"user-agent", "accept-encoding", "connection", "content-length", "x-schemathesis-testcaseid"}


def crash_reports(fuzzer: Fuzzer, deployment: Deployment) -> tuple[int, str]:
    """How many requests failed (a 5xx, no answer, or a crash the server logged), and each distinct
    failure once: by where the server failed and how (else by operation and outcome), with the first
    request that did it and how many did."""
    crashes: dict[str, ServerError] = {}
    for name in ("api", *(f"worker-{number}" for number in range(len(deployment.workers)))):
        crashes.update(logged_crashes(deployment.log_text(name)))
    failed = list(dict.fromkeys([*fuzzer.failed, *(request_id for request_id in crashes if request_id)]))
    groups: dict[tuple[str, str], list[Exchange]] = {}
    for request_id in failed:
        exchange = fuzzer.exchanges.get(request_id) or Exchange(
            operation="?", request_id=request_id, request="(not one of the fuzzer's requests)", outcome="?"
        )
        crash = crashes.get(request_id)
        key = (crash.where, crash.error.split(":")[0]) if crash else (exchange.operation, exchange.outcome[:40])
        groups.setdefault(key, []).append(exchange)
    reports = []
    for members in groups.values():
        first = members[0]
        crash = crashes.get(first.request_id)
        operations = sorted({member.operation for member in members})
        server = f"{crash.error}\n        {crash.frames}" if crash else "(no crash in the logs)"
        reports.append(
            f"--- {len(members)}x {first.outcome}, from {', '.join(operations)}\n    {first.request}\n"
            f"    server ({first.request_id}): {server}"
        )
    return len(failed), "\n".join(reports)


def _fuzz(fuzzer: Fuzzer, operations: list[schemathesis.APIOperation], run_seed: int) -> None:
    """This thread draws the cases; `THREADS` others send them, a few drawn cases ahead at most."""
    requests_to_send: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=THREADS * 2)

    broken: list[Exception] = []

    def sender() -> None:
        # Keeps taking jobs whatever happens, or the drawing thread would wait on a full queue forever.
        while (job := requests_to_send.get()) is not None:
            try:
                job()
            except Exception as exc:
                broken.append(exc)

    with ThreadPoolExecutor(THREADS) as pool:
        senders = [pool.submit(sender) for _ in range(THREADS)]
        try:
            for operation in operations:
                for mode, examples in EXAMPLES.items():
                    fuzz_operation(
                        fuzzer, operation, mode, examples=examples, run_seed=run_seed, send=requests_to_send.put
                    )
            for job in hand_made(fuzzer):
                requests_to_send.put(job)
        finally:
            for _ in senders:
                requests_to_send.put(None)
        for finished in senders:
            finished.result()
    if broken:
        raise broken[0]


async def test_no_request_gets_a_server_error(deploy: DeployFactory) -> None:
    deployment = await deploy(ENV)
    async with httpx2.AsyncClient(base_url=deployment.base_url) as client:
        document = (await client.get("/openapi.json")).raise_for_status().json()
    # The credentials are the fuzzer's own, on every request: 401s would hide the routes behind them.
    config = schemathesis.Config.from_dict({"generation": {"with-security-parameters": False}})
    schema = schemathesis.openapi.from_dict(document, config=config)
    run_seed = int(os.environ.get("SWITCHBOARD_FUZZ_SEED") or random.randrange(2**32))
    fuzzer = Fuzzer(base_url=deployment.base_url)
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [operation for operation in operations if operation.label not in NOT_FUZZED]
    # The turns first: what they create is what later requests pick ids from.
    operations.sort(key=lambda operation: operation.method != "post")

    started = time.monotonic()
    await asyncio.to_thread(_fuzz, fuzzer, operations, run_seed)
    elapsed_s = time.monotonic() - started
    by_operation: dict[str, Counter[int]] = {}
    for (label, status), count in sorted(fuzzer.statuses.items()):
        by_operation.setdefault("hand-made" if label.startswith("hand-made") else label, Counter())[status] += count
    for label, counts in by_operation.items():
        print(f"{label}: {' '.join(f'{status}x{count}' for status, count in sorted(counts.items()))}")
    failed, reports = crash_reports(fuzzer, deployment)
    print(f"fuzzed {fuzzer.sent} requests in {elapsed_s:.1f} s (seed {run_seed}); {failed} failed")

    if failed:
        pytest.fail(
            f"{failed} of {fuzzer.sent} requests got a 5xx or no answer, or crashed the server "
            f"(SWITCHBOARD_FUZZ_SEED={run_seed}):\n{reports}",
            pytrace=False,
        )
    assert fuzzer.sent >= MIN_CASES, f"only {fuzzer.sent} requests were sent"
