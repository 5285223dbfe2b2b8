"""A fake OpenAI-compatible Chat Completions server for tests and benchmarks.

In-process::

    with FakeLLM() as llm:
        client = openai.AsyncOpenAI(base_url=llm.base_url, api_key="x")
        ...
        assert llm.requests[-1]["stream"] is True

Standalone (prints ``fake-llm listening on http://127.0.0.1:PORT/v1`` once bound)::

    python -m tests.fake_llm --port 8099

Endpoints: ``POST /v1/chat/completions`` (streaming and not), ``GET /v1/models``,
``GET /v1/models/{id}``, ``GET /_requests`` (recorded chat request bodies, oldest
first) and ``DELETE /_requests`` (clear them).

Behaviour is scripted by directives in the text of the LAST ``user`` message (string
content, or the ``text`` parts of list content), so processes that only talk to the
fake through an application under test can still control it:

``(no directive)``               reply ``echo: <user text without directives, stripped>``
``[[reply:SOME TEXT]]``          reply exactly SOME TEXT (``<NUL>`` in it becomes a NUL character)
``[[tool:NAME {json args}]]``    call tool NAME with those args (``finish_reason: tool_calls``);
                                 repeat for parallel calls; args optional (``{}``); ignored
                                 unless the request's ``tools`` offer NAME
``[[error:STATUS]]``             answer HTTP STATUS with an OpenAI-style error body
``[[error:STATUS message]]``     ... with that error message
``[[delay:SECONDS]]``            wait before responding (before the first token)
``[[tokendelay:SECONDS]]``       wait between streamed chunks
``[[tokens:N]]``                 reply with N chunks of ``"tok "``
``[[hang]]``                     never respond (until the client disconnects)
``[[midstream_error]]``          stream the role chunk and two content chunks, then drop
                                 the connection (non-streaming: HTTP 500)

If the last message of the conversation has role ``tool``, the reply is the text
``tool said: <content>`` (contents of consecutive trailing tool messages joined with
`` | ``), whatever the directives (error/delay/hang still apply).

Text is streamed in 4-character chunks. Errors with status 429 or >= 500 carry a
``retry-after-ms: 10`` header so SDK retries are quick.

A request with ``"logprobs": true`` gets log probabilities for its text, one entry per chunk (the
chunk's text is its token, its logprob ``-0.1 * its position``, with ``top_logprobs`` alternatives),
in the completion's choice or in each streamed chunk, as OpenAI sends them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

__all__ = ["FakeLLM", "Script", "create_app", "parse_directives"]

DEFAULT_MODEL = "fake-model"
CHUNK_CHARS = 4
HANG_SECONDS = 3600.0


# --------------------------------------------------------------------- directives

_DIRECTIVE_RE = re.compile(r"\[\[(reply|tool|error|delay|tokendelay|tokens|hang|midstream_error)(?=[:\]])")
_TOOL_NAME_RE = re.compile(r"\s*([A-Za-z0-9_.\-]+)\s*")
_JSON = json.JSONDecoder()


def parse_directives(text: str) -> tuple[list[tuple[str, Any]], str]:
    """Split ``text`` into ``[(name, arg), ...]`` directives and the remaining text.

    ``arg`` is ``None`` for bare directives, ``(tool_name, args_dict)`` for ``tool`` and
    the raw string otherwise. Malformed directives are left in the text.
    """
    directives: list[tuple[str, Any]] = []
    rest: list[str] = []
    pos = 0
    while True:
        m = _DIRECTIVE_RE.search(text, pos)
        if m is None:
            rest.append(text[pos:])
            break
        rest.append(text[pos : m.start()])
        name, i = m.group(1), m.end()
        parsed: tuple[Any, int] | None = None
        if text.startswith("]]", i):
            parsed = (None, i + 2)
        elif name == "tool":
            nm = _TOOL_NAME_RE.match(text, i + 1)
            if nm is not None:
                j, args = nm.end(), cast(Any, {})
                if not text.startswith("]]", j):
                    try:
                        args, j = _JSON.raw_decode(text, j)
                    except ValueError:
                        j = -1
                    while 0 <= j < len(text) and text[j].isspace():
                        j += 1
                if j >= 0 and text.startswith("]]", j) and isinstance(args, dict):
                    parsed = ((nm.group(1), args), j + 2)
        else:
            close = text.find("]]", i + 1)
            if close >= 0:
                parsed = (text[i + 1 : close], close + 2)
        if parsed is None:  # malformed: keep it as text
            rest.append(text[m.start() : m.end()])
            pos = m.end()
            continue
        directives.append((name, parsed[0]))
        pos = parsed[1]
    return directives, "".join(rest).strip()


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content)


def _offered_tools(body: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for tool in body.get("tools") or ():
        if isinstance(tool, dict):
            fn = tool.get("function")
            name = fn.get("name") if isinstance(fn, dict) else tool.get("name")
            if name:
                names.add(name)
    return names


@dataclass
class Script:
    """What to answer to one request, decided from its body."""

    text: str = ""
    pieces: list[str] = field(default_factory=list)
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    error_status: int | None = None
    error_message: str | None = None
    delay: float = 0.0
    token_delay: float = 0.0
    hang: bool = False
    midstream_error: bool = False
    prompt_tokens: int = 1

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Script:
        messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
        user_text = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        directives, clean = parse_directives(user_text)
        s = cls(prompt_tokens=max(1, sum(len(_text_of(m.get("content"))) for m in messages) // 4))
        reply: str | None = None
        tokens: int | None = None
        tools: list[tuple[str, dict[str, Any]]] = []
        for name, arg in directives:
            try:
                if name == "reply" and reply is None:
                    # `<NUL>` stands for the character no client may send but a model may write.
                    reply = (arg or "").replace("<NUL>", "\x00")
                elif name == "tool":
                    tools.append(arg)
                elif name == "error":
                    status, _, msg = (arg or "500").strip().partition(" ")
                    s.error_status, s.error_message = int(status), (msg.strip() or None)
                elif name == "delay":
                    s.delay = float(arg or 0)
                elif name == "tokendelay":
                    s.token_delay = float(arg or 0)
                elif name == "tokens":
                    tokens = int(arg or 0)
                elif name == "hang":
                    s.hang = True
                elif name == "midstream_error":
                    s.midstream_error = True
            except (TypeError, ValueError):
                pass  # a malformed argument: ignore the directive

        trailing_tool_results: list[str] = []
        for m in reversed(messages):
            if m.get("role") != "tool":
                break
            trailing_tool_results.insert(0, _text_of(m.get("content")))

        if trailing_tool_results:
            s.text = "tool said: " + " | ".join(trailing_tool_results)
        else:
            offered = _offered_tools(body)
            s.tool_calls = [t for t in tools if t[0] in offered]
            if s.tool_calls:
                return s
            if reply is not None:
                s.text = reply
            elif tokens is not None:
                s.text = "tok " * tokens
                s.pieces = ["tok "] * tokens
                return s
            else:
                s.text = "echo: " + clean
        s.pieces = [s.text[i : i + CHUNK_CHARS] for i in range(0, len(s.text), CHUNK_CHARS)]
        return s

    @property
    def completion_tokens(self) -> int:
        if self.tool_calls:
            return sum(1 + len(json.dumps(args)) // 4 for _, args in self.tool_calls)
        return len(self.pieces)

    def usage(self) -> dict[str, int]:
        c = self.completion_tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": c, "total_tokens": self.prompt_tokens + c}


# ------------------------------------------------------------------------ errors

_ERROR_KINDS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request (fake)"),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (fake)"),
    403: ("permission_error", None, "Permission denied (fake)"),
    404: ("invalid_request_error", "model_not_found", "The model does not exist (fake)"),
    408: ("timeout", None, "Request timed out (fake)"),
    409: ("conflict", None, "Conflict (fake)"),
    422: ("invalid_request_error", None, "Unprocessable entity (fake)"),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached (fake)"),
    500: ("server_error", None, "The server had an error while processing your request (fake)"),
    502: ("server_error", None, "Bad gateway (fake)"),
    503: ("server_error", None, "The engine is currently overloaded (fake)"),
}


def _error_response(status: int, message: str | None = None) -> JSONResponse:
    kind, code, default_message = _ERROR_KINDS.get(status, ("api_error", None, f"Error {status} (fake)"))
    headers = {"retry-after-ms": "10"} if status == 429 or status >= 500 else None
    body = {"error": {"message": message or default_message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class MidstreamAbort(Exception):
    """Raised to make uvicorn drop the connection in the middle of a stream."""


class _DropMidstreamAbortLogs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info
        return not (exc and isinstance(exc[1], MidstreamAbort))


def _install_log_filter() -> None:
    log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropMidstreamAbortLogs) for f in log.filters):
        log.addFilter(_DropMidstreamAbortLogs())


# ---------------------------------------------------------------------- responses


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class _Completion:
    """ASGI response for one chat completion: handles delays, disconnects and streaming."""

    def __init__(self, body: dict[str, Any], script: Script) -> None:
        self.body = body
        self.script = script
        self.stream = bool(body.get("stream"))
        self.model = body.get("model") or DEFAULT_MODEL
        self.id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.disconnected: asyncio.Event | None = None

    async def _sleep(self, seconds: float) -> bool:
        """Sleep; False if the client went away meanwhile."""
        if self.disconnected is None:
            await asyncio.sleep(seconds)
            return True
        try:
            await asyncio.wait_for(self.disconnected.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        s = self.script
        watcher = None
        if s.hang or s.delay > 0 or (self.stream and s.token_delay > 0):
            self.disconnected = asyncio.Event()

            async def watch() -> None:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        self.disconnected.set()  # type: ignore[union-attr]
                        return

            watcher = asyncio.ensure_future(watch())
        try:
            if s.hang and not await self._sleep(HANG_SECONDS):
                return
            if s.delay > 0 and not await self._sleep(s.delay):
                return
            if s.error_status is not None:
                await _error_response(s.error_status, s.error_message)(scope, receive, send)
            elif self.stream:
                await self._send_stream(send)
            elif s.midstream_error:
                raise MidstreamAbort("midstream_error directive (non-streaming)")
            else:
                await JSONResponse(self._completion())(scope, receive, send)
        finally:
            if watcher is not None:
                watcher.cancel()

    def _tool_call_dicts(self) -> list[dict[str, Any]]:
        return [
            {
                "id": "call_" + uuid.uuid4().hex[:24],
                "type": "function",
                "function": {"name": name, "arguments": _dumps(args)},
            }
            for name, args in self.script.tool_calls
        ]

    def _logprobs(self, tokens: list[str], first: int = 0) -> dict[str, Any] | None:
        """OpenAI's `logprobs` for these tokens, if the request asked for them."""
        if not self.body.get("logprobs"):
            return None
        alternatives = int(self.body.get("top_logprobs") or 0)

        def entry(token: str, logprob: float) -> dict[str, Any]:
            return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

        content = [
            {
                **entry(token, round(-0.1 * position, 3)),
                "top_logprobs": [entry(token, round(-0.1 * position, 3))]
                + [entry(f"alt{n}", round(-0.1 * position - n, 3)) for n in range(1, alternatives)],
            }
            for position, token in enumerate(tokens, start=first)
        ]
        return {"content": content, "refusal": None}

    def _completion(self) -> dict[str, Any]:
        s = self.script
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None, "annotations": []}
        logprobs = None
        if s.tool_calls:
            message["tool_calls"] = self._tool_call_dicts()
            finish = "tool_calls"
        else:
            message["content"] = s.text
            finish = "stop"
            logprobs = self._logprobs(s.pieces)
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "service_tier": "default",
            "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}],
            "usage": s.usage(),
        }

    def _deltas(self) -> list[dict[str, Any]]:
        """The deltas of the stream, before the finishing chunk."""
        s = self.script
        if not s.tool_calls:
            return [{"role": "assistant", "content": "", "refusal": None}] + [{"content": p} for p in s.pieces]
        deltas: list[dict[str, Any]] = []
        for index, call in enumerate(self._tool_call_dicts()):
            head = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            delta: dict[str, Any] = {"tool_calls": [head]}
            if index == 0:
                delta = {"role": "assistant", "content": None, "refusal": None, **delta}
            deltas.append(delta)
            arguments = call["function"]["arguments"]
            half = max(1, len(arguments) // 2)
            for part in (arguments[:half], arguments[half:]):
                if part:
                    deltas.append({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
        return deltas

    async def _send_stream(self, send: Send) -> None:
        s = self.script
        include_usage = bool((self.body.get("stream_options") or {}).get("include_usage"))
        prefix = _dumps(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": "fp_fake",
            }
        )[:-1]
        suffix = ',"usage":null}' if include_usage else "}"

        def event(delta: dict[str, Any], finish: str | None = None, position: int = 0) -> bytes:
            # Each content chunk carries its own token's log probability, numbered from the first.
            logprobs = self._logprobs([delta["content"]], first=position) if delta.get("content") else None
            choice = _dumps([{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}])
            return f'data: {prefix},"choices":{choice}{suffix}\n\n'.encode()

        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-request-id", self.id.encode()),
                ],
            }
        )
        deltas = self._deltas()
        if s.midstream_error:
            deltas = deltas[:3]
        for n, delta in enumerate(deltas):
            if n > 1 and s.token_delay > 0:
                if not await self._sleep(s.token_delay):
                    return
            elif n % 16 == 15:
                await asyncio.sleep(0)  # be fair to other streams
            await send({"type": "http.response.body", "body": event(delta, position=n - 1), "more_body": True})
        if s.midstream_error:
            raise MidstreamAbort("midstream_error directive")
        tail = event({}, "tool_calls" if s.tool_calls else "stop")
        if include_usage:
            usage = _dumps(s.usage())
            tail += f'data: {prefix},"choices":[],"usage":{usage}}}\n\n'.encode()
        tail += b"data: [DONE]\n\n"
        await send({"type": "http.response.body", "body": tail, "more_body": False})


# ---------------------------------------------------------------------------- app


class _Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[dict[str, Any]] = []

    def add(self, body: dict[str, Any]) -> None:
        with self.lock:
            self.items.append(body)

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.items)

    def clear(self) -> int:
        with self.lock:
            n = len(self.items)
            self.items.clear()
            return n


def create_app() -> Starlette:
    """The fake server's ASGI app; recorded request bodies are in ``app.state.recorder``."""
    recorder = _Recorder()

    async def chat_completions(request: Request) -> Any:
        try:
            body = await request.json()
        except ValueError:
            return _error_response(400, "Request body is not valid JSON (fake)")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error_response(400, "'messages' is required (fake)")
        recorder.add(body)
        return _Completion(body, Script.from_body(body))

    def _model(model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "fake-llm"}

    async def list_models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [_model(DEFAULT_MODEL)]})

    async def get_model(request: Request) -> Response:
        return JSONResponse(_model(request.path_params["model_id"]))

    async def requests_endpoint(request: Request) -> Response:
        if request.method == "DELETE":
            return JSONResponse({"cleared": recorder.clear()})
        return JSONResponse(recorder.snapshot())

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
            Route("/_requests", requests_endpoint, methods=["GET", "DELETE"]),
        ]
    )
    app.state.recorder = recorder
    return app


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _config(app: Starlette, sock: socket.socket, **kwargs: Any) -> uvicorn.Config:
    host, port = sock.getsockname()[:2]
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_keep_alive=30,
        **kwargs,
    )


class FakeLLM:
    """Runs the fake server with uvicorn in a background thread on 127.0.0.1."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self.port = 0
        self.app = create_app()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:PORT``."""
        if not self.port:
            raise RuntimeError("FakeLLM is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return self.url + "/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Chat completion request bodies received so far (a copy, oldest first)."""
        recorder: _Recorder = self.app.state.recorder
        return recorder.snapshot()

    def clear(self) -> None:
        """Forget the recorded requests."""
        self.app.state.recorder.clear()

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until at least ``n`` requests were recorded; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            reqs = self.requests
            if len(reqs) >= n or time.monotonic() >= deadline:
                if len(reqs) < n:
                    raise TimeoutError(f"FakeLLM got {len(reqs)} requests, expected {n}")
                return reqs
            time.sleep(0.01)

    def start(self) -> FakeLLM:
        if self._thread is not None:
            return self
        _install_log_filter()
        sock = _bind(self.host, self._requested_port)
        self.port = sock.getsockname()[1]
        # log_config=None: don't reconfigure the process' logging (we live inside pytest).
        server = uvicorn.Server(_config(self.app, sock, log_config=None))
        self._server = server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="fake-llm", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("FakeLLM failed to start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.should_exit = True
            server.force_exit = True  # don't wait for hanging streams
        if thread is not None:
            thread.join(10)

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_llm", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port (printed on stdout)")
    args = parser.parse_args(argv)
    _install_log_filter()
    sock = _bind(args.host, args.port)
    print(f"fake-llm listening on http://{args.host}:{sock.getsockname()[1]}/v1", flush=True)
    uvicorn.Server(_config(create_app(), sock)).run(sockets=[sock])


if __name__ == "__main__":
    main()
