"""The typed state a worker builds at start-up and every job receives."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.event_log import EventLog
from domain.metrics import WorkerMetrics
from domain.settings import Settings
from workers.agent_runner import AgentRunner
from workers.cancels import Cancellations
from workers.event_sink import EventSink
from workers.leases import LeaseKeeper
from workers.mcp_servers import McpServerPool
from workers.text_pacing import TextPacing


@dataclass(frozen=True, kw_only=True)
class WorkerDeps:
    settings: Settings
    db_engine: AsyncEngine
    redis: Redis
    event_log: EventLog
    events: EventSink
    # Shared by every run of the process: how long each holds its text (see workers/text_pacing.py).
    text_pacing: TextPacing
    http_client: httpx2.AsyncClient
    runners: Mapping[str, AgentRunner]
    leases: LeaseKeeper
    # arq's own connection pool (`arq.connections.ArqRedis`), for putting runs back on the queue.
    queue: Any
    cancels: Cancellations
    # The MCP servers of the assistants file, started as runs need them.
    mcp_servers: McpServerPool
    metrics: WorkerMetrics

    async def aclose(self) -> None:
        await self.mcp_servers.aclose()
        await self.cancels.aclose()
        await self.leases.aclose()
        await self.events.aclose()
        await self.http_client.aclose()
        await self.redis.aclose()
        await self.db_engine.dispose()


DEPS_KEY = "switchboard"
