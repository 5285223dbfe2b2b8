"""OpenTelemetry traces, off unless `SWITCHBOARD_OTEL=true`.

One trace per run: the API's span for the request, its span for the enqueue, whose context travels in
the job (`job_codec.TRACE_CONTEXT`), and under it the worker's span for the run, which holds the
agents' own spans (model calls, tool calls) and the span for writing the outcome. Where spans go is
OpenTelemetry's business: the standard `OTEL_EXPORTER_OTLP_*` variables (OTLP over HTTP), `OTEL_BSP_*`
for batching, `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`.

Every span carries the correlation id (`switchboard.request_id`), the one log lines written beside it
carry: in the worker, the id of the request that started the run (so a run resumed after an approval
has the approving request's id on its API spans and the first request's on its worker spans). A job
queued by a worker rather than the API (a turn that waited for the one before it, a run the reconciler
took over) carries no trace context: its run starts a trace of its own, with the same request id.

Off, nothing is set up: no exporter, no thread, and the hot path asks `enabled()` (a global read)
before it makes a span or writes a trace context into a job.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Tracer

from domain.errors import ConfigurationError
from domain.settings import Settings

if TYPE_CHECKING:
    # The SDK is imported when traces are turned on, not before: it takes a fifth of a second to load.
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

# The attribute every span carries: the request id of the request that started the work.
REQUEST_ID = "switchboard.request_id"
API_SERVICE = "switchboard-api"
WORKER_SERVICE = "switchboard-worker"

_provider: TracerProvider | None = None
_tracer: Tracer | None = None


def enabled() -> bool:
    return _tracer is not None


def setup(settings: Settings, *, service: str) -> TracerProvider | None:
    """Start exporting this process's spans, when the settings ask for it; None when they do not.

    Once per process: the provider becomes OpenTelemetry's global one, which the libraries that
    instrument themselves (the MCP SDK, PydanticAI) find there.
    """
    global _provider, _tracer
    if not settings.otel:
        return None
    if _provider is not None:
        return _provider
    _check_protocol()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    # OTEL_SERVICE_NAME or a service.name in OTEL_RESOURCE_ATTRIBUTES wins over ours.
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(_correlation_ids())
    # The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT, _TRACES_ENDPOINT, _HEADERS, _TIMEOUT, ... itself.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = provider.get_tracer("switchboard")
    return provider


def _check_protocol() -> None:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = os.environ.get(name)
        if protocol:
            if protocol != "http/protobuf":
                raise ConfigurationError(
                    f"{name}={protocol}: Switchboard exports traces over OTLP/HTTP only; use http/protobuf"
                )
            return


def tracer() -> Tracer:
    """Switchboard's own tracer: a no-op one while tracing is off."""
    return _tracer or trace.NoOpTracer()


def trace_context() -> dict[str, str]:
    """The current span's context, as W3C `traceparent` (and `tracestate`) headers, for a job to carry."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextlib.contextmanager
def job_span(name: str, carrier: Mapping[str, Any] | None, *, attributes: Mapping[str, str]) -> Iterator[Span]:
    """The span of a job a worker runs: a child of the span that enqueued it, when the job says which."""
    context = propagate.extract(dict(carrier)) if carrier else None
    with tracer().start_as_current_span(name, context=context, kind=SpanKind.CONSUMER, attributes=attributes) as span:
        yield span


def tag_run(*, request_id: str, assistant: str, attempt: int) -> None:
    """Name the current span (a job's) after the run it turned out to carry, and stamp its correlation id,
    known only once the run was claimed."""
    if _tracer is None:
        return
    span = trace.get_current_span()
    span.update_name(f"run {assistant}")
    span.set_attributes({"switchboard.assistant": assistant, "switchboard.attempt": attempt})
    if request_id:
        span.set_attribute(REQUEST_ID, request_id)


def _current_request_id() -> str | None:
    value = structlog.contextvars.get_contextvars().get("request_id")
    return str(value) if value else None


def _correlation_ids() -> SpanProcessor:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import Span as SdkSpan
    from opentelemetry.sdk.trace import SpanProcessor

    class CorrelationIds(SpanProcessor):
        """Stamps every span with the request id bound for logging (`api/request_id.py`, the worker's job),
        or else with its parent's, for spans started where nothing was bound."""

        def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
            request_id = _current_request_id()
            if request_id is None:
                parent = trace.get_current_span(parent_context)
                attributes = getattr(parent, "attributes", None) or {}
                inherited = attributes.get(REQUEST_ID)
                request_id = str(inherited) if inherited else None
            if request_id is not None:
                span.set_attribute(REQUEST_ID, request_id)

    return CorrelationIds()
