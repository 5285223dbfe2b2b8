"""An assistant's MCP tools as its runs see them, for either engine.

`AssistantTools` lists the assistant's servers (through the worker's pool), decides each tool's policy
(`domain/tool_policy.py`) and leaves the denied ones out: the model is never offered them. The model
knows a tool as `server_tool` (OpenAI's tool names allow no dot); everything else (the file, the run's
`tool.call` and `tool.result` events, people) names it `server.tool`.

Each engine gets the same tools through its own native interface, and its own native way to stop at
a call that needs approval, which is where approval (issue 11, section 2) plugs in:

- PydanticAI: `PydanticMcpToolset`, wrapped in PydanticAI's `ApprovalRequiredToolset`, whose calls to
  `approve` tools end the run with a `DeferredToolRequests` output listing them (`approvals`);
- OpenAI Agents SDK: `AgentsMcpTools`, an `agents.mcp.MCPServer` whose `require_approval` policy marks the
  `approve` tools, whose calls end the run with `interruptions`.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import structlog
from agents.mcp import MCPServer as AgentsMCPServer
from agents.mcp import MCPToolMetaContext
from agents.tool_context import ToolContext
from mcp_types import CallToolResult, GetPromptResult, ListPromptsResult, TextContent, Tool
from pydantic_ai import RunContext
from pydantic_ai.exceptions import ToolFailed
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.toolsets import AbstractToolset, ApprovalRequiredToolset, ToolsetTool
from pydantic_core import SchemaValidator, core_schema

from domain.assistant_file import FileAssistant
from domain.events import ToolCalled, ToolReturned
from domain.tool_policy import decide_tool_policy, qualified_tool_name
from workers.approved_calls import ApprovedCalls
from workers.mcp_servers import McpConnection, McpUnavailable
from workers.publisher import RunPublisher
from workers.todo_mcp import result_payload
from workers.tool_listing import announce_tools

log = structlog.get_logger("switchboard.worker.tools")

# What OpenAI (and most providers) accept as a tool's name.
_MODEL_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# `_meta` key by which the Agents SDK adapter learns the model's id of a call; never sent to a server.
CALL_ID_META_KEY = "switchboard/call_id"
# Where a PydanticAI tool definition carries its policy.
POLICY_METADATA_KEY = "switchboard_policy"
_ARGUMENTS = SchemaValidator(core_schema.dict_schema(keys_schema=core_schema.str_schema()))


@dataclass(frozen=True, kw_only=True)
class OfferedTool:
    """A tool the model is offered: allowed, or needing approval."""

    # What the model calls it: `server_tool`.
    model_name: str
    # What everyone else calls it: `server.tool`.
    qualified_name: str
    connection: McpConnection
    tool: Tool
    policy: Literal["allow", "approve"]


class AssistantTools:
    """The tools of one assistant of the file, shared by all its runs on this worker."""

    def __init__(
        self, assistant: FileAssistant, connections: Sequence[McpConnection], *, approved_calls: ApprovedCalls
    ) -> None:
        self.assistant = assistant
        self._connections = list(connections)
        self._approved_calls = approved_calls

    async def offered(self) -> dict[str, OfferedTool]:
        """The tools the model may be offered now, by the name it knows them by."""
        listings = await asyncio.gather(*(self._listing(connection) for connection in self._connections))
        offered: dict[str, OfferedTool] = {}
        for connection, tools in zip(self._connections, listings, strict=True):
            for tool in tools:
                read_only = tool.annotations.read_only_hint if tool.annotations else None
                policy = decide_tool_policy(
                    rules=self.assistant.tools, server=connection.name, tool=tool.name, read_only_hint=read_only
                )
                if policy == "deny":
                    continue
                model_name = f"{connection.name}_{tool.name}"
                if not _MODEL_TOOL_NAME.fullmatch(model_name) or model_name in offered:
                    log.warning(
                        "mcp.tool_not_offered",
                        assistant=self.assistant.name,
                        tool=qualified_tool_name(connection.name, tool.name),
                        reason="its name, as the model would see it, is invalid or taken",
                    )
                    continue
                offered[model_name] = OfferedTool(
                    model_name=model_name,
                    qualified_name=qualified_tool_name(connection.name, tool.name),
                    connection=connection,
                    tool=tool,
                    policy=policy,
                )
        return offered

    async def announce(self, offered: dict[str, OfferedTool], *, publisher: RunPublisher, announced: set[str]) -> None:
        """Say which tools of each server the model is offered, once per server and run attempt."""
        by_server: dict[str, list[Tool]] = {}
        for tool in offered.values():
            by_server.setdefault(tool.connection.name, []).append(tool.tool)
        for server, tools in by_server.items():
            if server not in announced:
                announced.add(server)
                await announce_tools(publisher, server=server, tools=tools)

    async def _listing(self, connection: McpConnection) -> list[Tool]:
        try:
            return await connection.tools()
        except McpUnavailable as exc:
            # The run goes on without this server's tools; the model cannot call what it is not offered.
            log.warning("mcp.tools_unavailable", assistant=self.assistant.name, server=connection.name, reason=str(exc))
            return []

    async def call(
        self, tool: OfferedTool, arguments: dict[str, Any], *, call_id: str, publisher: RunPublisher
    ) -> CallToolResult:
        """Run one call, announcing it and its result as the run's events."""
        await publisher.emit(
            ToolCalled(
                run_id=publisher.run_id,
                attempt=publisher.attempt,
                call_id=call_id,
                tool=tool.qualified_name,
                args=arguments,
            )
        )
        if tool.policy == "approve":
            # The engine runs it only once its owner said yes: it happens once, as approved, or not at all.
            result = await self._approved_calls.run_once(
                run_id=publisher.run_id,
                call_id=call_id,
                tool=tool.qualified_name,
                arguments=arguments,
                call=lambda: tool.connection.call(tool.tool.name, arguments),
            )
        else:
            result = await tool.connection.call(tool.tool.name, arguments)
        publisher.tool_call_ended(tool=tool.qualified_name, is_error=result.is_error)
        await publisher.emit(
            ToolReturned(
                run_id=publisher.run_id,
                attempt=publisher.attempt,
                call_id=call_id,
                tool=tool.qualified_name,
                result=result_payload(result),
                is_error=result.is_error,
            )
        )
        return result


def result_text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def _new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


# ------------------------------------------------------------------------------------------- PydanticAI


class PydanticMcpToolset(AbstractToolset[None]):
    """One run's view of an assistant's tools, as a PydanticAI toolset. Use `approval_gated` around it."""

    def __init__(self, tools: AssistantTools, publisher: RunPublisher) -> None:
        self._tools = tools
        self._publisher = publisher
        self._offered: dict[str, OfferedTool] = {}
        self._announced: set[str] = set()

    @property
    def id(self) -> str | None:
        return "mcp"

    def qualified_name(self, model_name: str) -> str:
        offered = self._offered.get(model_name)
        return offered.qualified_name if offered is not None else model_name

    async def get_tools(self, ctx: RunContext[None]) -> dict[str, ToolsetTool[None]]:
        self._offered = await self._tools.offered()
        await self._tools.announce(self._offered, publisher=self._publisher, announced=self._announced)
        return {
            name: ToolsetTool(
                toolset=self,
                tool_def=ToolDefinition(
                    name=name,
                    description=offered.tool.description or offered.tool.title,
                    parameters_json_schema=offered.tool.input_schema,
                    metadata={POLICY_METADATA_KEY: offered.policy},
                ),
                max_retries=1,
                args_validator=_ARGUMENTS,
            )
            for name, offered in self._offered.items()
        }

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[None], tool: ToolsetTool[None]
    ) -> Any:
        offered = self._offered.get(name)
        if offered is None:
            raise ToolFailed(f"there is no tool {name!r}")
        call_id = ctx.tool_call_id or _new_call_id()
        result = await self._tools.call(offered, tool_args, call_id=call_id, publisher=self._publisher)
        if result.is_error:
            raise ToolFailed(result_text(result))
        return result_text(result)


def approval_gated(toolset: PydanticMcpToolset) -> ApprovalRequiredToolset[None]:
    """The toolset, with every call to an `approve` tool deferred for approval instead of run."""

    def needs_approval(ctx: RunContext[None], tool_def: ToolDefinition, args: dict[str, Any]) -> bool:
        # Fail closed: a tool whose policy is unknown is not run without a person's yes.
        return bool((tool_def.metadata or {}).get(POLICY_METADATA_KEY, "approve") == "approve")

    return ApprovalRequiredToolset(toolset, approval_required_func=needs_approval)


# ----------------------------------------------------------------------------------- OpenAI Agents SDK


def _call_id_meta(context: MCPToolMetaContext) -> dict[str, Any] | None:
    """The model's id of the call, so the call's events carry it."""
    run_context = context.run_context
    if isinstance(run_context, ToolContext):
        return {CALL_ID_META_KEY: run_context.tool_call_id}
    return None


class AgentsMcpTools(AgentsMCPServer):
    """One run's view of an assistant's tools, as the Agents SDK's MCP server. The sessions belong to the
    worker's pool, so connecting and cleaning up are nothing here."""

    def __init__(self, tools: AssistantTools, *, publisher: RunPublisher) -> None:
        super().__init__(
            use_structured_content=False, require_approval=self._needs_approval, tool_meta_resolver=_call_id_meta
        )
        self._tools = tools
        self._publisher = publisher
        self._offered: dict[str, OfferedTool] = {}
        self._announced: set[str] = set()

    @property
    def name(self) -> str:
        return self._tools.assistant.name

    def qualified_name(self, model_name: str) -> str:
        offered = self._offered.get(model_name)
        return offered.qualified_name if offered is not None else model_name

    async def connect(self) -> None:
        return None

    async def cleanup(self) -> None:
        return None

    def _needs_approval(self, run_context: Any, agent: Any, tool: Tool) -> bool:
        offered = self._offered.get(tool.name)
        return offered is None or offered.policy == "approve"

    async def list_tools(self, run_context: Any = None, agent: Any = None) -> list[Tool]:
        self._offered = await self._tools.offered()
        await self._tools.announce(self._offered, publisher=self._publisher, announced=self._announced)
        return [offered.tool.model_copy(update={"name": name}) for name, offered in self._offered.items()]

    async def call_tool(
        self, tool_name: str, arguments: dict[str, Any] | None, meta: dict[str, Any] | None = None
    ) -> CallToolResult:
        offered = self._offered.get(tool_name)
        if offered is None:
            return CallToolResult(
                content=[TextContent(type="text", text=f"there is no tool {tool_name!r}")], is_error=True
            )
        call_id = cast(str | None, (meta or {}).get(CALL_ID_META_KEY)) or _new_call_id()
        return await self._tools.call(offered, dict(arguments or {}), call_id=call_id, publisher=self._publisher)

    async def list_prompts(self) -> ListPromptsResult:
        return ListPromptsResult(prompts=[])

    async def get_prompt(self, name: str, arguments: dict[str, Any] | None = None) -> GetPromptResult:
        raise ValueError(f"the assistant {self.name!r} has no prompt {name!r}")
