"""A small MCP server for the assistants-file tests, built with the official SDK's `MCPServer`.

Over stdio (what a worker starts from an assistants file)::

    python -m tests.mcp_test_server

Over streamable HTTP, answering only requests that carry `Authorization: Bearer $MCP_TEST_TOKEN`
(prints ``mcp-test-server listening on http://127.0.0.1:PORT/mcp`` once bound)::

    python -m tests.mcp_test_server --http --port 0

Tools:

``lookup(key)``        read-only (`readOnlyHint`): answers ``found <key> on <MCP_TEST_NAME>``
``append_line(text)``  writes: appends ``text`` to the file named by ``$MCP_TEST_LOG``, so calls can be counted
``secret_digest()``    read-only: the SHA-256 of ``$MCP_TEST_SECRET``, so a test can tell the server got the
                       value without the value ever leaving it
``slow(seconds)``      read-only: sleeps, then answers ``slept``
``crash()``            the process exits at once (`os._exit`), as a server that dies does
``grow(name)``         adds a read-only tool ``name`` and tells the client the tool list changed
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import socket
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations

READ_ONLY = ToolAnnotations(read_only_hint=True)
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False)


def create_server() -> MCPServer:
    server = MCPServer(os.environ.get("MCP_TEST_NAME", "test-server"))
    name = os.environ.get("MCP_TEST_NAME", "test-server")

    @server.tool(annotations=READ_ONLY)
    def lookup(key: str) -> str:
        """Look something up."""
        return f"found {key} on {name}"

    @server.tool(annotations=WRITES)
    def append_line(text: str) -> str:
        """Append a line to the server's log file."""
        with open(os.environ["MCP_TEST_LOG"], "a", encoding="utf-8") as log:
            log.write(text + "\n")
        return f"appended {text}"

    @server.tool(annotations=READ_ONLY)
    def secret_digest() -> str:
        """The SHA-256 of the server's secret."""
        return hashlib.sha256(os.environ.get("MCP_TEST_SECRET", "").encode()).hexdigest()

    @server.tool(annotations=READ_ONLY)
    async def slow(seconds: float) -> str:
        """Take a while."""
        await asyncio.sleep(seconds)
        return "slept"

    @server.tool(annotations=WRITES)
    def crash() -> str:
        """Die."""
        os._exit(3)

    @server.tool(annotations=WRITES)
    async def grow(tool_name: str, ctx: Context[Any]) -> str:
        """Add a read-only tool named `tool_name`."""

        def added() -> str:
            return f"{tool_name} was added"

        server.add_tool(added, name=tool_name, description="A tool added at run time.", annotations=READ_ONLY)
        await ctx.session.send_tool_list_changed()
        return f"added {tool_name}"

    return server


def _require_token(app: Any, token: str) -> Any:
    """The HTTP app, answering 401 unless the request carries the bearer token."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await app(scope, receive, send)

    return guarded


def serve_http(port: int) -> None:
    import uvicorn

    # The SDK announces every session at INFO; a test's output has no use for that.
    logging.getLogger("mcp").setLevel(logging.WARNING)
    app = create_server().streamable_http_app(stateless_http=False, json_response=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    print(f"mcp-test-server listening on http://127.0.0.1:{sock.getsockname()[1]}/mcp", flush=True)
    config = uvicorn.Config(
        _require_token(app, os.environ["MCP_TEST_TOKEN"]), log_level="warning", lifespan="on", access_log=False
    )
    uvicorn.Server(config).run(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.mcp_test_server")
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.http:
        serve_http(args.port)
    else:
        create_server().run("stdio")


if __name__ == "__main__":
    main()
