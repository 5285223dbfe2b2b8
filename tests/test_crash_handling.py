"""A bug in a route still answers in our error shape: a JSON body, or a stream that ends in an error event.

Built as small inline apps around the real handler and the real stream response, as Starlette's own
tests do: no route of ours crashes on purpose, so none could show it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.errors import handle_unexpected
from api.relay.sse import event_stream
from domain.settings import Settings


async def crashing_route(_request: Request) -> Response:
    raise KeyError("a bug")


async def crashing_stream(_request: Request) -> Response:
    async def events() -> AsyncIterator[dict[str, str]]:
        yield {"event": "delta", "data": "{}"}
        raise KeyError("a bug mid-stream")

    return event_stream(events(), settings=Settings(), shutdown=anyio.Event())


def app() -> Starlette:
    return Starlette(
        routes=[Route("/crash", crashing_route), Route("/stream", crashing_stream)],
        exception_handlers={Exception: handle_unexpected},
    )


async def test_an_exception_in_a_route_is_a_json_500() -> None:
    transport = httpx2.ASGITransport(app=app(), raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/crash")
    assert response.status_code == 500
    assert response.json() == {
        "error": {"message": "internal server error", "type": "server_error", "param": None, "code": "internal_error"}
    }


async def test_an_exception_in_a_stream_ends_it_with_an_error_event() -> None:
    transport = httpx2.ASGITransport(app=app())
    async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/stream")
    assert response.status_code == 200
    events = [block for block in response.text.replace("\r\n", "\n").split("\n\n") if block.strip()]
    assert events[0].startswith("event: delta")
    name, data = events[-1].split("\n", 1)
    assert name == "event: error"
    assert json.loads(data.removeprefix("data: "))["error"]["code"] == "internal_error"
