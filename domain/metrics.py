"""The Prometheus metrics: their names and labels, a contract with every dashboard and alert built on them.

Each process builds one set at start-up, in a registry of its own, and passes it down; nothing is
recorded in prometheus-client's global default registry. The API records what it sees of clients and
the queue (`ApiMetrics`), a worker what it sees of runs (`WorkerMetrics`); both count the errors of
the dependencies they reach.

Every label value the code can record is known in advance and created at start-up, so a series is
present (at 0) before its first event, and a rate over it never starts from nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

Dependency = Literal["database", "redis", "llm"]
DEPENDENCIES: Final[tuple[Dependency, ...]] = ("database", "redis", "llm")

# How an attempt ended, as `switchboard_runs_finished_total{status}` says it.
RunEnding = Literal["succeeded", "failed", "cancelled", "awaiting_approval", "superseded", "interrupted"]
RUN_ENDINGS: Final[tuple[RunEnding, ...]] = (
    "succeeded",
    "failed",
    "cancelled",
    "awaiting_approval",
    "superseded",
    "interrupted",
)
ToolOutcome = Literal["ok", "error"]
TokenDirection = Literal["input", "output"]
ReconcilerAction = Literal["timed_out", "worker_lost", "cancelled", "retried", "requeued", "approval_expired"]
RECONCILER_ACTIONS: Final[tuple[ReconcilerAction, ...]] = (
    "timed_out",
    "worker_lost",
    "cancelled",
    "retried",
    "requeued",
    "approval_expired",
)

# Seconds. A queue wait is mostly milliseconds, and minutes when the workers fall behind; a run takes
# seconds, up to the run timeout (300 s by default).
QUEUE_WAIT_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
TTFT_BUCKETS_S: Final = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
RUN_DURATION_BUCKETS_S: Final = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    # The process's CPU, memory and open files (`process_*`), read from /proc at scrape time only.
    ProcessCollector(registry=registry)
    return registry


def _dependency_errors(registry: CollectorRegistry) -> Counter:
    counter = Counter(
        "switchboard_dependency_errors",
        "Failures to reach a dependency: the database, Redis or the model's provider",
        ["dependency"],
        registry=registry,
    )
    for dependency in DEPENDENCIES:
        counter.labels(dependency)
    return counter


class ApiMetrics:
    """What an API process records: its open streams, the queue as it sees it, its dependencies' errors."""

    def __init__(self) -> None:
        self.registry = _registry()
        self.open_streams = Gauge(
            "switchboard_open_streams", "Server-sent event streams this API process is serving", registry=self.registry
        )
        self.queue_depth = Gauge("switchboard_queue_depth", "Runs waiting in the queue", registry=self.registry)
        self.queue_oldest_age_s = Gauge(
            "switchboard_queue_oldest_age_seconds",
            "How long the oldest run in the queue has waited (0 when the queue is empty)",
            registry=self.registry,
        )
        self.dependency_errors = _dependency_errors(self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class WorkerMetrics:
    """What a worker process records about the runs it carries and the reconciler it runs."""

    def __init__(self, *, assistants: Iterable[str] = ()) -> None:
        self.registry = _registry()
        registry = self.registry
        self.runs_started = Counter(
            "switchboard_runs_started", "Attempts of runs this worker started", ["assistant"], registry=registry
        )
        self.runs_finished = Counter(
            "switchboard_runs_finished",
            "Attempts of runs this worker ended, by how they ended",
            ["assistant", "status"],
            registry=registry,
        )
        self.queue_wait_s = Histogram(
            "switchboard_queue_wait_seconds",
            "From a run's enqueue (its creation, or its approval) to a worker's start of it",
            buckets=QUEUE_WAIT_BUCKETS_S,
            registry=registry,
        )
        self.ttft_s = Histogram(
            "switchboard_ttft_seconds",
            "From a worker's start of an attempt to the first text it published",
            buckets=TTFT_BUCKETS_S,
            registry=registry,
        )
        self.run_duration_s = Histogram(
            "switchboard_run_duration_seconds",
            "From a worker's start of an attempt to its end",
            buckets=RUN_DURATION_BUCKETS_S,
            registry=registry,
        )
        self.tool_calls = Counter(
            "switchboard_tool_calls", "Tool calls made, by tool and outcome", ["tool", "outcome"], registry=registry
        )
        self.approvals_pending = Gauge(
            "switchboard_approvals_pending",
            "Tool calls waiting for their owner's decision (as this worker's reconciler last counted)",
            registry=registry,
        )
        self.model_tokens = Counter(
            "switchboard_model_tokens", "Model tokens, as the provider reported them", ["direction"], registry=registry
        )
        self.reconciler_actions = Counter(
            "switchboard_reconciler_actions", "Runs the reconciler acted on, by action", ["action"], registry=registry
        )
        self.dependency_errors = _dependency_errors(registry)
        for direction in ("input", "output"):
            self.model_tokens.labels(direction)
        for action in RECONCILER_ACTIONS:
            self.reconciler_actions.labels(action)
        for assistant in assistants:
            self.runs_started.labels(assistant)
            for ending in RUN_ENDINGS:
                self.runs_finished.labels(assistant, ending)

    def run_started(self, *, assistant: str) -> None:
        self.runs_started.labels(assistant).inc()

    def run_finished(self, *, assistant: str, ending: RunEnding, duration_s: float) -> None:
        self.runs_finished.labels(assistant, ending).inc()
        self.run_duration_s.observe(duration_s)

    def tokens(self, *, input_tokens: int, output_tokens: int) -> None:
        if input_tokens:
            self.model_tokens.labels("input").inc(input_tokens)
        if output_tokens:
            self.model_tokens.labels("output").inc(output_tokens)

    def tool_call(self, *, tool: str, outcome: ToolOutcome) -> None:
        self.tool_calls.labels(tool, outcome).inc()
