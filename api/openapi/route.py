"""`GET /openapi.json`, no credentials needed: the document is built on the first request and kept, since
it depends on the code alone."""

from __future__ import annotations

import functools
import json
from importlib.metadata import version

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.openapi._document import build_document
from api.openapi.operations import OPERATIONS, CallerHeaders

DESCRIPTION = (
    "A chat backend between chat clients and LLMs: OpenAI's Chat Completions, a runs API, the todo "
    'assistant\'s own API, ChatKit and MCP. Errors are `{"error": {message, type, param, code}}`.'
)


@functools.cache
def document_bytes() -> bytes:
    document = build_document(
        title="Switchboard",
        version=version("switchboard"),
        description=DESCRIPTION,
        operations=OPERATIONS,
        caller_headers=CallerHeaders,
    )
    return json.dumps(document, separators=(",", ":")).encode()


async def openapi_json(_request: Request) -> Response:
    # Built in a thread: generating the schemas of ChatKit's and MCP's request types takes a moment.
    body = await anyio.to_thread.run_sync(document_bytes)
    return Response(body, media_type="application/json")


routes: list[BaseRoute] = [Route("/openapi.json", openapi_json, methods=["GET"])]
