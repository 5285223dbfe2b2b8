"""A worker run's own MCP session with the todo server, bound to the run's user when it opens.

A run has no HTTP request to authenticate, so the binding travels with the session instead: each run
opens an in-memory MCP connection (anyio memory streams, no socket) to the todo server running in this
process, and that connection's serving loop is handed a `TodoScope` carrying the run's `RunBinding`.
Every handler on the connection sees that scope and nothing else: the model's tool arguments can name
any user or task, but the session they arrive on decides whose tasks are touched. Nothing depends on
context variables crossing task boundaries; the binding is a plain object held by the session.

`RunTodoTools` is the Agents SDK's side of the session (an `agents.mcp.MCPServer`): the agent lists
and calls tools through it over real MCP, and it reports each call and result as run events.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, cast

import anyio
from agents.mcp import MCPServer as AgentsMCPServer
from agents.mcp import MCPToolMetaContext
from agents.tool_context import ToolContext
from mcp import Client
from mcp.client._transport import TransportStreams
from mcp.server.mcpserver import MCPServer
from mcp.server.runner import serve_dual_era_loop
from mcp.shared.memory import create_client_server_memory_streams
from mcp_types import CallToolResult, GetPromptResult, ListPromptsResult, RequestParamsMeta, TextContent, Tool

from domain.events import ToolCalled, ToolReturned
from todo.server import CALL_ID_META_KEY, TodoScope
from workers.publisher import RunPublisher
from workers.tool_listing import announce_tools

TOOLS_SERVER_NAME = "todo"
# How long a closing session waits for its serving loop to wind down before cancelling it.
SESSION_CLOSE_GRACE_S = 2.0


@asynccontextmanager
async def bound_session(server: MCPServer[TodoScope], scope: TodoScope) -> AsyncIterator[TransportStreams]:
    """Client-side streams of a new in-memory connection to `server` whose handlers all see `scope`.

    This is the SDK's in-memory transport, except that the serving loop gets this connection's scope
    as its state instead of entering the server-wide lifespan.
    """
    # The SDK's own in-memory transport reaches the low-level server the same way (it is not public yet).
    lowlevel = server._lowlevel_server
    async with create_client_server_memory_streams() as (client_streams, server_streams):
        server_read, server_write = server_streams
        served = anyio.Event()

        async def serve() -> None:
            try:
                await serve_dual_era_loop(
                    lowlevel,
                    server_read,
                    server_write,
                    lifespan_state=scope,
                    init_options=lowlevel.create_initialization_options(),
                )
            finally:
                served.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve)
            try:
                yield client_streams
            finally:
                # End of input ends the loop; cancel only if it does not wind down by itself.
                await client_streams[1].aclose()
                with anyio.move_on_after(SESSION_CLOSE_GRACE_S, shield=True):
                    await served.wait()
                tasks.cancel_scope.cancel()


def _call_id_meta(context: MCPToolMetaContext) -> dict[str, Any] | None:
    """Name the model's call id on the MCP request, so the call's record and its events agree on it."""
    run_context = context.run_context
    if isinstance(run_context, ToolContext):
        return {CALL_ID_META_KEY: run_context.tool_call_id}
    return None


def result_payload(result: CallToolResult) -> Any:
    text = "".join(block.text for block in result.content if isinstance(block, TextContent))
    if result.is_error:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


class RunTodoTools(AgentsMCPServer):
    """The todo tools as one run's agent sees them: over a session bound to that run."""

    def __init__(self, server: MCPServer[TodoScope], *, scope: TodoScope, publisher: RunPublisher) -> None:
        super().__init__(use_structured_content=False, tool_meta_resolver=_call_id_meta)
        self._server = server
        self._scope = scope
        self._publisher = publisher
        self._stack = AsyncExitStack()
        self._client: Client | None = None
        self._tools: list[Tool] | None = None

    @property
    def name(self) -> str:
        return TOOLS_SERVER_NAME

    async def connect(self) -> None:
        transport = bound_session(self._server, self._scope)
        self._client = await self._stack.enter_async_context(Client(transport, mode="legacy", cache=None))

    async def cleanup(self) -> None:
        self._client = None
        await self._stack.aclose()

    async def __aenter__(self) -> RunTodoTools:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.cleanup()

    def _connected(self) -> Client:
        if self._client is None:
            raise RuntimeError("the run's todo session is not open")
        return self._client

    async def list_tools(self, run_context: Any = None, agent: Any = None) -> list[Tool]:
        # The tools are fixed for the life of the process; one listing per run is plenty.
        if self._tools is None:
            self._tools = (await self._connected().list_tools()).tools
            await announce_tools(self._publisher, server=TOOLS_SERVER_NAME, tools=self._tools)
        return self._tools

    async def call_tool(
        self, tool_name: str, arguments: dict[str, Any] | None, meta: dict[str, Any] | None = None
    ) -> CallToolResult:
        client = self._connected()
        call_id = str((meta or {}).get(CALL_ID_META_KEY) or "call_" + secrets.token_hex(12))
        publisher = self._publisher
        args = dict(arguments or {})
        await publisher.emit(
            ToolCalled(run_id=publisher.run_id, attempt=publisher.attempt, call_id=call_id, tool=tool_name, args=args)
        )
        request_meta = cast(RequestParamsMeta, {**(meta or {}), CALL_ID_META_KEY: call_id})
        result = await client.call_tool(tool_name, args, meta=request_meta)
        publisher.tool_call_ended(tool=tool_name, is_error=result.is_error)
        await publisher.emit(
            ToolReturned(
                run_id=publisher.run_id,
                attempt=publisher.attempt,
                call_id=call_id,
                tool=tool_name,
                result=result_payload(result),
                is_error=result.is_error,
            )
        )
        return result

    async def list_prompts(self) -> ListPromptsResult:
        return ListPromptsResult(prompts=[])

    async def get_prompt(self, name: str, arguments: dict[str, Any] | None = None) -> GetPromptResult:
        raise ValueError(f"the todo server has no prompt {name!r}")
