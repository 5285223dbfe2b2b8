"""Announcing the tools a run's model is offered, as the run's `tools.listed` event.

The Responses API shows each server's tools as an `mcp_list_tools` item before its first call; the
other surfaces ignore the event. Each run's tool adapter announces a server once per attempt.
"""

from __future__ import annotations

from collections.abc import Sequence

from mcp_types import Tool

from domain.events import ListedTool, ToolsListed
from workers.publisher import RunPublisher


async def announce_tools(publisher: RunPublisher, *, server: str, tools: Sequence[Tool]) -> None:
    listed = [
        ListedTool(
            name=tool.name,
            description=tool.description or tool.title,
            input_schema=dict(tool.input_schema),
            annotations=tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else None,
        )
        for tool in tools
    ]
    await publisher.emit(ToolsListed(run_id=publisher.run_id, attempt=publisher.attempt, server=server, tools=listed))
