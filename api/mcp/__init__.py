"""The todo tools for external MCP clients, at `/mcp`."""

from api.mcp.endpoint import MCP_PATH, McpEndpoint

__all__ = ["MCP_PATH", "McpEndpoint"]
