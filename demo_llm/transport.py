"""An httpx2 transport that streams an in-process ASGI app's response as it is produced.

httpx2's own `ASGITransport` buffers the whole body before returning, which would turn the demo
model's token stream into one lump. This one hands each body chunk over as the app sends it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import httpx2

ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]


class _QueuedBody(httpx2.AsyncByteStream):
    def __init__(self, chunks: asyncio.Queue[bytes | None], app_task: asyncio.Task[None]) -> None:
        self._chunks = chunks
        self._app_task = app_task

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self._chunks.get()) is not None:
            yield chunk
        await self._app_task

    async def aclose(self) -> None:
        if not self._app_task.done():
            self._app_task.cancel()


class StreamingASGITransport(httpx2.AsyncBaseTransport):
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = b"".join([chunk async for chunk in request.stream])  # type: ignore[union-attr]
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(key.lower(), value) for key, value in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port),
            "client": ("127.0.0.1", 0),
            "root_path": "",
        }
        started: asyncio.Future[MutableMapping[str, Any]] = asyncio.get_running_loop().create_future()
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        request_sent = False
        finished = asyncio.Event()

        async def receive() -> MutableMapping[str, Any]:
            nonlocal request_sent
            if not request_sent:
                request_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.set_result(message)
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    chunks.put_nowait(message["body"])
                if not message.get("more_body", False):
                    chunks.put_nowait(None)
                    finished.set()

        async def run_app() -> None:
            try:
                await self._app(scope, receive, send)
            finally:
                finished.set()
                chunks.put_nowait(None)
                if not started.done():
                    started.set_exception(RuntimeError("the app ended without a response"))

        app_task = asyncio.create_task(run_app())
        start = await started
        return httpx2.Response(start["status"], headers=start.get("headers", []), stream=_QueuedBody(chunks, app_task))
