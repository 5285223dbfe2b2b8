"""What the API's lifespan builds once and every request reaches through `request.state`."""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from api.auth import Authenticator
from api.relay.enqueue import JobEnqueuer
from api.relay.event_hub import RunEventHub
from api.relay.queue_gauge import QueueGauge
from domain.assistant_catalogue import AssistantCatalogue
from domain.event_log import EventLog
from domain.metrics import ApiMetrics
from domain.settings import Settings


@dataclass(kw_only=True)
class InflightRuns:
    """Runs this process is waiting on; past the limit new ones get 429 rather than piling up."""

    limit: int
    count: int = 0

    def try_acquire(self) -> bool:
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    def release(self) -> None:
        self.count -= 1


@dataclass(frozen=True, kw_only=True)
class AppState:
    settings: Settings
    db_engine: AsyncEngine
    redis: Redis
    hub: RunEventHub
    event_log: EventLog
    enqueuer: JobEnqueuer
    authenticator: Authenticator
    queue: QueueGauge
    inflight: InflightRuns = field(default_factory=lambda: InflightRuns(limit=1000))
    # The assistants a client may name: the built-in ones and the assistants file's.
    assistants: AssistantCatalogue = field(default_factory=AssistantCatalogue)
    # This process's Prometheus metrics, in a registry of its own.
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
