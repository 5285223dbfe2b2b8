"""Assembling a worker process: its start-up, its shutdown and its one job function."""

from __future__ import annotations

import os
from typing import Any

from arq.connections import RedisSettings
from arq.worker import func
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from domain import keys
from domain.assistant_catalogue import AssistantCatalogue, load_catalogue
from domain.assistant_file import AssistantsFileError, unset_variables
from domain.assistants import GENERAL_ASSISTANT, TODO_ASSISTANT
from domain.database import create_engine
from domain.event_log import EventLog
from domain.job_codec import CHAT_JOB, deserialize_job, serialize_job
from domain.metrics import WorkerMetrics
from domain.settings import Settings
from todo.server import create_todo_server
from workers.agent_runner import AgentRunner
from workers.agents_model import create_agents_model
from workers.approved_calls import ApprovedCalls
from workers.cancels import Cancellations
from workers.chat_job import run_chat
from workers.context import DEPS_KEY, WorkerDeps
from workers.dispatch import WakeableWorker
from workers.event_sink import EventSink
from workers.file_assistants import build_file_runners
from workers.general_agent import GeneralAgentRunner
from workers.leases import LeaseKeeper
from workers.llm import create_http_client, create_model, speaks_openai_chat
from workers.mcp_servers import McpServerPool
from workers.metrics_server import MetricsServer
from workers.reconciler import Reconciler
from workers.startup import wait_for_dependencies
from workers.text_pacing import TextPacing
from workers.todo_agent import TodoAgentRunner
from workers.tracing import setup_worker_tracing


def build_runners(
    settings: Settings,
    deps_http: Any,
    *,
    db_engine: AsyncEngine,
    catalogue: AssistantCatalogue,
    mcp_servers: McpServerPool,
) -> dict[str, AgentRunner]:
    # The todo runner first: a provider it cannot use is reported as one configuration line.
    todo = TodoAgentRunner(
        model=create_agents_model(settings, deps_http),
        todo_server=create_todo_server(db_engine=db_engine),
        db_engine=db_engine,
        lease_s=settings.run_lease_s,
    )
    model = create_model(settings, deps_http)
    return {
        GENERAL_ASSISTANT: GeneralAgentRunner(model, pass_raw_openai_fields=speaks_openai_chat(settings)),
        TODO_ASSISTANT: todo,
        **build_file_runners(
            catalogue.file_assistants,
            settings,
            deps_http,
            pool=mcp_servers,
            approved_calls=ApprovedCalls(db_engine),
        ),
    }


def load_worker_catalogue(settings: Settings) -> AssistantCatalogue:
    """The assistants, checked as a worker needs them: with every `${NAME}` the file uses set here."""
    catalogue = load_catalogue(settings)
    problems = unset_variables(catalogue.file_assistants, os.environ)
    if problems:
        raise AssistantsFileError([f"{settings.assistants_file}: {problem}" for problem in problems])
    return catalogue


def build_worker(settings: Settings, *, burst: bool = False, handle_signals: bool = True) -> WakeableWorker:
    reconciler: Reconciler | None = None
    metrics_server: MetricsServer | None = None
    # Read and checked now, so that a mistake stops the worker before it takes any work.
    catalogue = load_worker_catalogue(settings)

    async def on_startup(ctx: dict[str, Any]) -> None:
        nonlocal reconciler, metrics_server
        # OpenTelemetry when asked for; Agents SDK traces go to OpenAI's servers only when asked for.
        setup_worker_tracing(settings)
        deps = _build_deps(settings, queue=ctx["redis"], catalogue=catalogue)
        ctx[DEPS_KEY] = deps
        if settings.worker_metrics_port is not None:
            metrics_server = MetricsServer.start(
                deps.metrics.registry, host=settings.worker_metrics_host, port=settings.worker_metrics_port
            )
        deps.events.start()
        deps.leases.start()
        deps.cancels.start()
        # While the database is away the worker takes no work: it could not carry a run to its end.
        worker.ready_to_claim = lambda: deps.leases.database_ok
        reconciler = Reconciler(deps)
        reconciler.start()

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        if reconciler is not None:
            await reconciler.aclose()
        if metrics_server is not None:
            await metrics_server.stop()
        deps: WorkerDeps | None = ctx.get(DEPS_KEY)
        if deps is not None:
            await deps.aclose()

    worker = WakeableWorker(
        [func(run_chat, name=CHAT_JOB)],
        queue_name=keys.QUEUE_NAME,
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        wake_redis_url=settings.redis_url,
        before_connect=lambda: wait_for_dependencies(settings),
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        burst=burst,
        handle_signals=handle_signals,
        job_completion_wait=settings.worker_grace_s,
        lease_s=settings.run_lease_s,
        max_jobs=settings.worker_max_jobs,
        # The run enforces its own timeout and reports it; arq's is only a backstop behind it.
        job_timeout=settings.run_timeout_s + 30,
        # Outcomes live in the database and the event log; arq's own result copy would be dead weight.
        keep_result=0,
        poll_delay=settings.worker_poll_delay_s,
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
    )
    return worker


def _build_deps(settings: Settings, *, queue: Any, catalogue: AssistantCatalogue) -> WorkerDeps:
    db_engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
    redis = Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    http_client = create_http_client(settings)
    event_log = EventLog(redis, max_events=settings.event_log_max, ttl_s=settings.event_log_ttl_s)
    cancels = Cancellations(settings.redis_url)
    mcp_servers = McpServerPool(catalogue.file_assistants, tool_timeout_s=settings.mcp_tool_timeout_s)
    runners = build_runners(settings, http_client, db_engine=db_engine, catalogue=catalogue, mcp_servers=mcp_servers)
    return WorkerDeps(
        settings=settings,
        cancels=cancels,
        queue=queue,
        db_engine=db_engine,
        redis=redis,
        event_log=event_log,
        events=EventSink(event_log, interval_s=settings.delta_coalesce_ms / 1000),
        text_pacing=TextPacing(settings.delta_coalesce_ms / 1000),
        http_client=http_client,
        runners=runners,
        mcp_servers=mcp_servers,
        metrics=WorkerMetrics(assistants=runners),
        leases=LeaseKeeper(db_engine=db_engine, redis=redis, lease_s=settings.run_lease_s, on_cancel=cancels.cancel),
    )
