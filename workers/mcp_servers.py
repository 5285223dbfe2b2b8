"""The MCP servers of the assistants file, one live session each per worker, shared by every run.

A stdio server is started once, the first time a run needs it, and then kept: its process and its
session serve every later run of the worker. Lazily rather than at worker start-up, so that a worker
spawns only the servers its runs use, and a server that cannot start costs the runs that need it a
clear tool error instead of keeping the whole worker from taking other work. An HTTP server gets one
session over one pooled HTTP client, opened the same way.

Each server's session is owned by a supervisor task of its own: anyio's task groups and cancel scopes
inside the MCP client must be entered and left by one task, which a run's task cannot be (runs come and
go; the session stays). Runs only send requests over it. When the session ends (the process died, the
connection was lost) the supervisor starts it again, after 0.5 s, then 1 s, 2 s… up to 30 s while it
keeps failing; a session that stayed up for a minute resets the delay.

The server's tool list is fetched once per session and kept until the server says it changed
(`notifications/tools/list_changed`). A tool call waits at most the server's `timeout_s`, or
`SWITCHBOARD_MCP_TOOL_TIMEOUT_S`; past it the call is cancelled on the server and reported to the model
as a failed call. No call is ever retried here: a tool may have acted before its server died.

`${NAME}` in a server's env, args and headers is expanded from this process's environment when the
session starts, into the transport's parameters and nowhere else: no log line, exception text or repr
of ours carries the values.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import mcp_types
import structlog
from mcp import Client, MCPError, StdioServerParameters
from mcp.client._transport import Transport, TransportStreams
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import MCP_SESSION_ID, streamable_http_client
from mcp.shared.message import SessionMessage
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT, CallToolResult, TextContent, Tool

from domain.assistant_file import FileAssistant, McpServerConfig, MissingVariable, StdioServer, expand, variables_in

log = structlog.get_logger("switchboard.worker.mcp")

# A session that does not come up within this long counts as down for the run that waits for it.
START_TIMEOUT_S = 30.0
FIRST_RESTART_DELAY_S = 0.5
MAX_RESTART_DELAY_S = 30.0
# A session that stayed up this long was healthy: its next restart starts from the first delay again.
HEALTHY_AFTER_S = 60.0
# How long a closing worker gives each server to wind down before cancelling its supervisor.
CLOSE_GRACE_S = 5.0
# What an HTTP server's connection may take apart from a call (the calls have their own timeout).
HTTP_CONNECT_TIMEOUT_S = 10.0
# How often a run waiting for a restarting session looks again.
WAIT_STEP_S = 0.05
# A request refused because the server forgot the session is sent again on a new one, this many times in all.
SESSION_TRIES = 2
# Values shorter than this are not masked out of error messages: they would garble them, and are no secret.
MASKED_MIN_CHARS = 4


class McpUnavailable(Exception):
    """The server has no live session to offer (it is starting, restarting or cannot start)."""


@dataclass(eq=False, kw_only=True)
class _Session:
    """One session with the server, from its start to its end."""

    # Set once the session has ended: the process died, the connection was lost, the server forgot it.
    ended: anyio.Event = field(default_factory=anyio.Event)
    # The HTTP server answered 404 for this session: it no longer knows it (it restarted, say), and ran
    # nothing sent over it since, so a request it refused so may be sent again on the next session.
    forgotten: bool = False
    client: Client | None = None

    def connected(self) -> Client:
        if self.client is None:
            raise McpUnavailable("the session is not open")
        return self.client


class McpConnection:
    """One configured server of one assistant: its session, kept alive, and its cached tool list."""

    def __init__(self, *, assistant: str, config: McpServerConfig, tool_timeout_s: float) -> None:
        self.assistant = assistant
        self.config = config
        self.name = config.name
        self.tool_timeout_s = config.timeout_s or tool_timeout_s
        self._session: _Session | None = None
        self._up = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._last_error = "it has not started yet"
        # The last attempt to start the session failed: runs are told at once rather than made to wait
        # through the backoff for an attempt that will likely fail again.
        self._start_failed = False
        self._tools: list[Tool] | None = None
        # Bumped whenever the tool list may have changed, so a listing that was in flight meanwhile is
        # not kept: it may predate the change.
        self._tools_generation = 0

    async def tools(self) -> list[Tool]:
        """The server's tools, from the cache when the server has not said they changed."""
        for _ in range(SESSION_TRIES):
            session = await self._live_session()
            if self._tools is not None:
                return self._tools
            generation = self._tools_generation
            try:
                tools = await self._list_tools(session.connected())
            except (MCPError, TimeoutError, anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
                if session.forgotten:
                    continue
                raise McpUnavailable(f"the MCP server '{self.name}' did not list its tools: {_describe(exc)}") from exc
            # A list_changed that arrived meanwhile may postdate this listing: keep it for this run only.
            if generation == self._tools_generation:
                self._tools = tools
            return tools
        raise McpUnavailable(f"the MCP server '{self.name}' forgot its session again and again")

    async def _list_tools(self, client: Client) -> list[Tool]:
        tools: list[Tool] = []
        cursor: str | None = None
        async with asyncio.timeout(self.tool_timeout_s):
            while True:
                page = await client.list_tools(cursor=cursor)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if cursor is None:
                    return tools

    async def call(self, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        """Call a tool. Whatever goes wrong on the way is a failed result the model reads, never an exception."""
        for _ in range(SESSION_TRIES):
            try:
                session = await self._live_session()
            except McpUnavailable as exc:
                return _failed(str(exc))
            result = await self._call(session, tool, arguments)
            # Refused for a session the server had forgotten, the call was never run: send it on the new one.
            if result is not None:
                return result
        return _failed(f"the MCP server '{self.name}' forgot its session again and again")

    async def _call(self, session: _Session, tool: str, arguments: dict[str, Any]) -> CallToolResult | None:
        try:
            return await session.connected().call_tool(tool, arguments, read_timeout_seconds=self.tool_timeout_s)
        except MCPError as exc:
            if session.forgotten:
                return None
            if exc.code == REQUEST_TIMEOUT:
                return _failed(f"the tool did not answer within {self.tool_timeout_s:g} s and was cancelled")
            if exc.code == CONNECTION_CLOSED:
                session.ended.set()
                return _failed(
                    f"the MCP server '{self.name}' stopped during the call; it is being restarted, and whether "
                    "the tool did anything is unknown"
                )
            return _failed(f"the MCP server '{self.name}' refused the call: {exc.error.message}")
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            session.ended.set()
            return _failed(f"the connection to the MCP server '{self.name}' was lost during the call")
        except Exception as exc:
            # A result the client could not read, say: the model is told, and the run goes on.
            return _failed(f"the call to the MCP server '{self.name}' failed: {self._masked(_describe(exc))}")

    async def aclose(self) -> None:
        self._closing = True
        session = self._session
        if session is not None:
            session.ended.set()
        supervisor = self._supervisor
        if supervisor is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(supervisor), CLOSE_GRACE_S)
        except TimeoutError:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor

    async def _live_session(self) -> _Session:
        if self._closing:
            raise McpUnavailable(f"the MCP server '{self.name}' is shutting down")
        if self._supervisor is None:
            # An empty context: the supervisor outlives the run that happened to start it, and must not
            # log with that run's id.
            self._supervisor = asyncio.create_task(
                self._supervise(), name=f"mcp:{self.assistant}:{self.name}", context=contextvars.Context()
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while True:
            session = self._session
            if session is not None and self._up.is_set() and not session.ended.is_set():
                return session
            remaining_s = deadline - loop.time()
            if self._start_failed or remaining_s <= 0:
                raise McpUnavailable(f"the MCP server '{self.name}' is not running: {self._last_error}")
            # Starting, or restarting (an ended session's `_up` may stay set for a moment while it winds down).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._up.wait(), min(remaining_s, WAIT_STEP_S))
            if self._up.is_set() and (self._session is None or self._session.ended.is_set()):
                await asyncio.sleep(min(remaining_s, WAIT_STEP_S))

    async def _supervise(self) -> None:
        delay_s = FIRST_RESTART_DELAY_S
        loop = asyncio.get_running_loop()
        while not self._closing:
            started_at = loop.time()
            session = _Session()
            came_up = False
            try:
                async with self._connect(session) as client:
                    session.client = client
                    self._session = session
                    self._tools, self._tools_generation = None, self._tools_generation + 1
                    came_up, self._start_failed = True, False
                    self._up.set()
                    log.info("mcp.server_started", assistant=self.assistant, server=self.name)
                    await session.ended.wait()
                self._last_error = "its session ended"
            except MissingVariable as exc:
                # The worker's start-up check names every unset variable; only a changed environment gets here.
                self._last_error = str(exc)
            except Exception as exc:
                self._last_error = self._masked(_describe(exc))
            finally:
                self._start_failed = not came_up
                self._up.clear()
                self._session = None
            if self._closing:
                break
            if loop.time() - started_at >= HEALTHY_AFTER_S:
                delay_s = FIRST_RESTART_DELAY_S
            log.warning(
                "mcp.server_down",
                assistant=self.assistant,
                server=self.name,
                reason=self._last_error,
                restart_in_s=delay_s,
            )
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, MAX_RESTART_DELAY_S)
        log.info("mcp.server_stopped", assistant=self.assistant, server=self.name)

    def _masked(self, text: str) -> str:
        """`text` without the value of any variable this server's configuration names: an error from the
        transport may quote a header or an argument it was given."""
        for _, template in self.config.templates():
            for name in variables_in(template):
                value = os.environ.get(name, "")
                if len(value) >= MASKED_MIN_CHARS:
                    text = text.replace(value, "***")
        return text

    @asynccontextmanager
    async def _connect(self, session: _Session) -> AsyncIterator[Client]:
        async def on_message(message: mcp_types.ServerNotification | Exception) -> None:
            if isinstance(message, mcp_types.ToolListChangedNotification):
                self._tools, self._tools_generation = None, self._tools_generation + 1

        async with AsyncExitStack() as stack:
            transport = await self._transport(stack, session)
            client = Client(
                _watched(transport, session.ended),
                # The initialize handshake every MCP server speaks; it also carries list_changed notifications.
                mode="legacy",
                # The tool list is cached here, per session, and dropped on list_changed.
                cache=None,
                message_handler=on_message,
                read_timeout_seconds=START_TIMEOUT_S,
            )
            yield await stack.enter_async_context(client)

    async def _transport(self, stack: AsyncExitStack, session: _Session) -> Transport:
        config = self.config
        environ: Mapping[str, str] = os.environ
        if isinstance(config, StdioServer):
            parameters = StdioServerParameters(
                command=config.command,
                args=[expand(arg, environ) for arg in config.args],
                # Over the SDK's few safe defaults (PATH, HOME…): the worker's own settings stay its own.
                env={key: expand(value, environ) for key, value in config.env.items()},
                cwd=config.cwd,
            )
            # The server's stderr is the worker's: its own log lines go where the worker's go.
            return stdio_client(parameters, errlog=sys.stderr)

        async def forgotten(response: httpx2.Response) -> None:
            # The spec's word for "I do not know this session": start a new one.
            if response.status_code == 404 and MCP_SESSION_ID in response.request.headers:
                session.forgotten = True
                session.ended.set()

        http = await stack.enter_async_context(
            httpx2.AsyncClient(
                headers={key: expand(value, environ) for key, value in config.headers.items()},
                timeout=httpx2.Timeout(HTTP_CONNECT_TIMEOUT_S, read=None),
                event_hooks={"response": [forgotten]},
            )
        )
        return streamable_http_client(config.url, http_client=http)


class McpServerPool:
    """Every MCP server of every assistant of the file, for the life of a worker."""

    def __init__(self, assistants: Sequence[FileAssistant], *, tool_timeout_s: float) -> None:
        self._connections: dict[str, list[McpConnection]] = {
            assistant.name: [
                McpConnection(assistant=assistant.name, config=config, tool_timeout_s=tool_timeout_s)
                for config in assistant.mcp_servers
            ]
            for assistant in assistants
        }

    def connections(self, assistant: str) -> list[McpConnection]:
        return self._connections.get(assistant, [])

    async def aclose(self) -> None:
        await asyncio.gather(
            *(connection.aclose() for connections in self._connections.values() for connection in connections)
        )


@asynccontextmanager
async def _watched(transport: Transport, ended: anyio.Event) -> AsyncIterator[TransportStreams]:
    """`transport`, setting `ended` when its read stream ends: a stdio server that exits closes its stdout,
    which the MCP client reports only to requests in flight. Watching the stream lets the supervisor
    restart the server at once rather than at the next request."""
    async with transport as (read, write):
        relay_send, relay_receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)

        async def relay() -> None:
            try:
                async with relay_send:
                    async for item in read:
                        await relay_send.send(item)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass
            finally:
                ended.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(relay)
            try:
                yield relay_receive, write
            finally:
                tasks.cancel_scope.cancel()


def _failed(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def _describe(exc: BaseException) -> str:
    """One line about a failure, from the innermost exception of a task group's group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return exc.error.message
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
