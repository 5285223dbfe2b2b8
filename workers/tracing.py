"""A worker's traces: its runs' spans, and the agent frameworks' own instrumentation turned on under them.

PydanticAI instruments itself with OpenTelemetry (`Agent.instrument_all`): an agent run span, a span
per model request, one per tool call. The OpenAI Agents SDK traces into a model of its own, handed to
tracing processors; `AgentsSpanBridge` is a processor that turns its traces and spans into
OpenTelemetry spans, under whatever span was current when the agent's run began (the run's).

Prompts, answers and tool arguments stay out of spans: they are the users' words, and a trace backend
is not where those are meant to be kept.

`SWITCHBOARD_AGENTS_TRACING` still decides, alone, whether the Agents SDK sends its traces to OpenAI.
"""

from __future__ import annotations

import threading
from contextvars import Token
from typing import Any

import agents
from agents.tracing import (
    AgentSpanData,
    CustomSpanData,
    FunctionSpanData,
    GenerationSpanData,
    GuardrailSpanData,
    HandoffSpanData,
    MCPListToolsSpanData,
    ResponseSpanData,
    Span,
    TaskSpanData,
    Trace,
    TracingProcessor,
    TurnSpanData,
)
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from pydantic_ai import Agent
from pydantic_ai.models.instrumented import InstrumentationSettings

from domain import tracing
from domain.settings import Settings

_bridged = False


def setup_worker_tracing(settings: Settings) -> None:
    global _bridged
    provider = tracing.setup(settings, service=tracing.WORKER_SERVICE)
    if provider is None:
        # Agents SDK traces go to OpenAI's servers: only when the operator asked for them.
        agents.set_tracing_disabled(not settings.agents_tracing)
        return
    if _bridged:
        return  # a second worker in this process: the frameworks are instrumented already
    _bridged = True
    # Without the words, and without every tool's schema on every model call (the tools' names and
    # parameters are still there, as `gen_ai.tool.definitions`).
    Agent.instrument_all(
        InstrumentationSettings(tracer_provider=provider, include_content=False, include_model_request_parameters=False)
    )
    bridge = AgentsSpanBridge(provider.get_tracer("openai-agents"))
    agents.set_tracing_disabled(False)
    if settings.agents_tracing:
        agents.add_trace_processor(bridge)
    else:
        # Only ours: the SDK's default processor would send the traces to OpenAI.
        agents.set_trace_processors([bridge])


class AgentsSpanBridge(TracingProcessor):
    """The Agents SDK's traces and spans as OpenTelemetry spans, with the GenAI conventions' names."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._lock = threading.Lock()
        self._spans: dict[str, otel_trace.Span] = {}
        # Tool calls' spans are made current while the tool runs, so the MCP SDK's spans nest in them.
        self._tokens: dict[str, Token[Context]] = {}

    def on_trace_start(self, trace: Trace) -> None:
        # Parented by the current span: the worker's span for the run, when the agent runs in it.
        span = self._tracer.start_span(trace.name, attributes={"openai_agents.trace_id": trace.trace_id})
        with self._lock:
            self._spans[trace.trace_id] = span

    def on_trace_end(self, trace: Trace) -> None:
        with self._lock:
            span = self._spans.pop(trace.trace_id, None)
        if span is not None:
            span.end()

    def on_span_start(self, span: Span[Any]) -> None:
        with self._lock:
            parent = self._spans.get(span.parent_id or "") or self._spans.get(span.trace_id)
        context = otel_trace.set_span_in_context(parent) if parent is not None else None
        name, kind, attributes = _describe(span.span_data)
        started = self._tracer.start_span(name, context=context, kind=kind, attributes=attributes)
        with self._lock:
            self._spans[span.span_id] = started
        if isinstance(span.span_data, FunctionSpanData):
            token = otel_context.attach(otel_trace.set_span_in_context(started))
            with self._lock:
                self._tokens[span.span_id] = token

    def on_span_end(self, span: Span[Any]) -> None:
        with self._lock:
            ended = self._spans.pop(span.span_id, None)
            token = self._tokens.pop(span.span_id, None)
        if token is not None:
            otel_context.detach(token)
        if ended is None:
            return
        _finish(ended, span.span_data)
        if span.error:
            ended.set_status(Status(StatusCode.ERROR, span.error.get("message")))
        ended.end()

    def shutdown(self) -> None:
        with self._lock:
            spans = list(self._spans.values())
            self._spans.clear()
            self._tokens.clear()
        for span in spans:
            span.end()

    def force_flush(self) -> None:
        pass  # the OpenTelemetry provider exports on its own schedule


def _describe(data: Any) -> tuple[str, SpanKind, dict[str, str]]:
    """A span's name, kind and first attributes, from what the SDK knows as it starts."""
    match data:
        case GenerationSpanData():
            model = data.model or ""
            return f"chat {model}".strip(), SpanKind.CLIENT, _some(operation="chat", request_model=model)
        case ResponseSpanData():
            return "chat", SpanKind.CLIENT, _some(operation="chat")
        case FunctionSpanData():
            return f"execute_tool {data.name}", SpanKind.INTERNAL, _some(operation="execute_tool", tool=data.name)
        case AgentSpanData():
            return f"invoke_agent {data.name}", SpanKind.INTERNAL, _some(operation="invoke_agent", agent=data.name)
        case MCPListToolsSpanData():
            return f"list_tools {data.server or ''}".strip(), SpanKind.INTERNAL, {"mcp.server": data.server or ""}
        case HandoffSpanData():
            return f"handoff {data.to_agent or ''}".strip(), SpanKind.INTERNAL, {}
        case TaskSpanData():
            return f"task {data.name}", SpanKind.INTERNAL, {}
        case GuardrailSpanData() | CustomSpanData():
            return data.name, SpanKind.INTERNAL, {}
        case TurnSpanData():
            return f"turn {data.turn}", SpanKind.INTERNAL, _some(agent=data.agent_name)
        case _:
            return str(getattr(data, "type", "span")), SpanKind.INTERNAL, {}


def _some(
    *, operation: str | None = None, request_model: str | None = None, tool: str | None = None, agent: str | None = None
) -> dict[str, str]:
    attributes = {
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": request_model,
        "gen_ai.tool.name": tool,
        "gen_ai.agent.name": agent,
    }
    return {key: value for key, value in attributes.items() if value}


def _finish(span: otel_trace.Span, data: Any) -> None:
    """What the SDK learned by the span's end: the model that answered, the tokens, a guardrail's verdict."""
    usage: dict[str, Any] | None = None
    match data:
        case GenerationSpanData():
            usage = data.usage
        case ResponseSpanData():
            usage = data.usage
            if data.response is not None:
                span.update_name(f"chat {data.response.model}")
                span.set_attribute("gen_ai.response.model", data.response.model)
                span.set_attribute("gen_ai.response.id", data.response.id)
                if usage is None and data.response.usage is not None:
                    usage = data.response.usage.model_dump()
        case GuardrailSpanData():
            span.set_attribute("openai_agents.guardrail.triggered", data.triggered)
        case _:
            pass
    if usage:
        for ours, theirs in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens")):
            value = usage.get(theirs)
            if isinstance(value, int):
                span.set_attribute(f"gen_ai.usage.{ours}", value)
