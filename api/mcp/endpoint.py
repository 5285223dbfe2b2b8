"""`/mcp`: the todo MCP server for external MCP clients, over streamable HTTP.

Stateless: every request stands alone, so any API instance can serve any call and nothing needs to be
sticky behind a load balancer. The caller is authenticated like every other endpoint (API key or
JWT; 401 in OpenAI's error shape otherwise) before the MCP SDK sees the request, and the user id is
handed to the tools in the request's ASGI state, never taken from anything the client sends in the
MCP messages. Host and Origin headers are checked against `SWITCHBOARD_MCP_ALLOWED_HOSTS`, which is
what stops DNS rebinding; real host names (compose services, a proxy's public name) go there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from api.state import AppState
from domain.errors import ServiceUnavailable
from domain.settings import Settings
from todo.server import HTTP_USER_STATE_KEY, create_todo_server

MCP_PATH = "/mcp"
ANY_HOST = "*"


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """Accept the configured hosts, and browser origins on those hosts or allowed by CORS."""
    hosts = settings.mcp_allowed_hosts
    if ANY_HOST in hosts:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    origins = [f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(hosts),
        allowed_origins=[*origins, *settings.cors_origins],
    )


class McpEndpoint:
    """The ASGI app at `/mcp`. Routed when the app is built; it serves once `serving` has started."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._manager: StreamableHTTPSessionManager | None = None

    @asynccontextmanager
    async def serving(self, *, db_engine: AsyncEngine) -> AsyncIterator[None]:
        """Run the SDK's session manager for as long as the app runs (entered by the app's lifespan)."""
        server = create_todo_server(db_engine=db_engine)
        # Builds the session manager; the Starlette app it returns is not used, we route to the manager.
        server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            stateless_http=True,
            json_response=True,
            transport_security=transport_security(self._settings),
        )
        manager = server.session_manager
        async with manager.run():
            self._manager = manager
            try:
                yield
            finally:
                self._manager = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Raised errors become responses in api/errors.py, like any route's: nothing has been sent yet.
        state: AppState = scope["state"]["app"]
        user_id = await state.authenticator.authenticate(Headers(scope=scope))
        if self._manager is None:
            raise ServiceUnavailable("the MCP endpoint is not running")
        # A fresh state for this request, with the authenticated user for the tools to read.
        scope = {**scope, "state": {**scope.get("state", {}), HTTP_USER_STATE_KEY: user_id}}
        await self._manager.handle_request(scope, receive, send)
