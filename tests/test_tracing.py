"""OpenTelemetry traces from a real deployment, exported to an OTLP/HTTP collector in this process.

One trace per run: the API's request span, its enqueue span, the worker's run span under it (the job
carries the trace context), and in the run the model calls, the tool calls and the outcome's write,
each with the request id.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from domain import tracing
from domain.errors import ConfigurationError
from domain.settings import Settings
from domain.tracing import REQUEST_ID
from tests.deployment import Deployment
from tests.test_approvals import append_call
from tests.test_assistants_file import SECRET, WEB_TOKEN, WebServer, assistants_toml, marker, web_server, workdir

__all__ = ["web_server", "workdir"]  # fixtures, shared with the assistants-file tests

SERVER, PRODUCER, CONSUMER, CLIENT = (
    SpanProto.SPAN_KIND_SERVER,
    SpanProto.SPAN_KIND_PRODUCER,
    SpanProto.SPAN_KIND_CONSUMER,
    SpanProto.SPAN_KIND_CLIENT,
)


@dataclass(frozen=True)
class ExportedSpan:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]

    def __repr__(self) -> str:
        return f"<{self.service} {self.name!r} {self.span_id} parent={self.parent_id or '-'}>"


class Collector:
    """An OTLP/HTTP trace receiver: `POST /v1/traces` with protobuf bodies, spans kept in memory."""

    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                collector.receive(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def receive(self, request: ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ExportedSpan(
                            service=str(resource.get("service.name")),
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            attributes={kv.key: _value(kv.value) for kv in span.attributes},
                        )
                    )
        with self._lock:
            self.spans.extend(received)

    def snapshot(self) -> list[ExportedSpan]:
        with self._lock:
            return list(self.spans)

    @contextmanager
    def running(self) -> Iterator[Collector]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


async def deployment_traced(deploy: Any, collector: Collector) -> Deployment:
    running: Deployment = await deploy(
        {
            "SWITCHBOARD_OTEL": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            # Exported within a tenth of a second of ending, so the test need not wait.
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
    )
    return running


def trace_of(collector: Collector, request_id: str) -> list[ExportedSpan]:
    """The spans of the trace begun by the API's request that carried `request_id`."""
    spans = collector.snapshot()
    requests = [span for span in spans if span.kind == SERVER and span.attributes.get(REQUEST_ID) == request_id]
    if not requests:
        return []
    return [span for span in spans if span.trace_id == requests[0].trace_id]


async def wait_for_trace(
    collector: Collector, request_id: str, *names: str, timeout_s: float = 20.0
) -> list[ExportedSpan]:
    """The request's trace once it holds spans of all these names (spans are exported as they end)."""
    deadline = time.monotonic() + timeout_s
    while True:
        trace = trace_of(collector, request_id)
        if all(any(span.name == name for span in trace) for name in names):
            return trace
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no trace for {request_id} with {names}; the collector has:\n{dump(collector.snapshot())}"
            )
        await asyncio.sleep(0.1)


def dump(spans: list[ExportedSpan]) -> str:
    return "\n".join(f"{span!r} {span.attributes.get(REQUEST_ID)}" for span in spans)


class Tree:
    def __init__(self, trace: list[ExportedSpan]) -> None:
        self.spans = trace
        self.by_id = {span.span_id: span for span in trace}

    def one(self, name: str) -> ExportedSpan:
        [span] = [span for span in self.spans if span.name == name]
        return span

    def named(self, name: str) -> list[ExportedSpan]:
        return sorted((span for span in self.spans if span.name == name), key=lambda span: span.start_ns)

    def ancestors(self, span: ExportedSpan) -> list[ExportedSpan]:
        chain = []
        while span.parent_id in self.by_id:
            span = self.by_id[span.parent_id]
            chain.append(span)
        return chain

    def assert_backbone(self, request_id: str, request_name: str, assistant: str) -> ExportedSpan:
        """API request -> enqueue -> the worker's run, each the child of the one before; every span
        of the trace carries the request id. The run's span is returned."""
        for span in self.spans:
            assert span.attributes.get(REQUEST_ID) == request_id, f"{span} lacks the request id:\n{dump(self.spans)}"
        request = self.one(request_name)
        assert (request.service, request.kind, request.parent_id) == ("switchboard-api", SERVER, "")
        enqueue = self.one("enqueue run_chat")
        assert (enqueue.service, enqueue.kind, enqueue.parent_id) == ("switchboard-api", PRODUCER, request.span_id)
        run = self.one(f"run {assistant}")
        assert (run.service, run.kind, run.parent_id) == ("switchboard-worker", CONSUMER, enqueue.span_id)
        # Every worker span is inside the run; the write of the outcome is its last step, after the models.
        for span in self.spans:
            if span.service == "switchboard-worker" and span is not run:
                assert run in self.ancestors(span), f"{span} is outside the run:\n{dump(self.spans)}"
        write = self.one("write outcome")
        assert write.parent_id == run.span_id
        assert all(model.end_ns <= write.start_ns for model in self.named("chat fake-model"))
        return run


async def test_one_trace_per_run_from_the_request_to_the_outcomes_write(deploy: Any) -> None:
    with Collector().running() as collector:
        running: Deployment = await deploy(
            {
                "SWITCHBOARD_OTEL": "true",
                "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
                # Spans are exported within a tenth of a second of ending, so the test need not wait long.
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            }
        )

        # The general assistant (PydanticAI): one model call.
        general_id = f"trace-general-{uuid.uuid4().hex[:8]}"
        reply = await running.openai().chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": "[[reply:traced]]"}],
            extra_headers={"X-Request-ID": general_id},
        )
        assert reply.choices[0].message.content == "traced"
        general = Tree(
            await wait_for_trace(
                collector, general_id, "POST /v1/chat/completions", "run assistant", "chat fake-model", "write outcome"
            )
        )
        run = general.assert_backbone(general_id, "POST /v1/chat/completions", "assistant")
        [model] = general.named("chat fake-model")
        assert model.kind == CLIENT and model.attributes["gen_ai.request.model"] == "fake-model"
        assert run in general.ancestors(model)
        # PydanticAI's spans keep the users' words out.
        assert "traced" not in json.dumps([span.attributes for span in general.spans])

        # The todo assistant (the Agents SDK): a model call, the tool it asked for, a model call after it.
        todo_id = f"trace-todo-{uuid.uuid4().hex[:8]}"
        title = f"traced task {uuid.uuid4().hex[:8]}"
        async with running.http("alice") as http:
            response = await http.post(
                "/api/alice/chat",
                json={"message": "[[tool:add_task " + json.dumps({"title": title}) + "]]"},
                headers={"X-Request-ID": todo_id},
            )
        assert response.status_code == 200, response.text
        assert [call["tool"] for call in response.json()["tool_calls"]] == ["add_task"]
        todo = Tree(
            await wait_for_trace(
                collector, todo_id, "POST /api/{user_id}/chat", "run todo", "execute_tool add_task", "write outcome"
            )
        )
        run = todo.assert_backbone(todo_id, "POST /api/{user_id}/chat", "todo")
        tool = todo.one("execute_tool add_task")
        first, *_, last = todo.named("chat fake-model")
        assert first.kind == CLIENT and first.attributes["gen_ai.usage.output_tokens"] > 0
        assert first.end_ns <= tool.start_ns and tool.end_ns <= last.start_ns
        assert run in todo.ancestors(tool)
        # The MCP SDK's own span for the call is inside the tool call's span.
        assert tool in todo.ancestors(todo.one("MCP send tools/call add_task"))
        assert title not in json.dumps([span.attributes for span in todo.spans])

        # Every span either request made is in its request's trace: none started a trace of its own.
        for request_id, tree in ((general_id, general), (todo_id, todo)):
            stamped = [span for span in collector.snapshot() if span.attributes.get(REQUEST_ID) == request_id]
            assert {span.trace_id for span in stamped} == {tree.spans[0].trace_id}


def test_off_by_default_nothing_is_set_up() -> None:
    assert Settings().otel is False
    assert tracing.setup(Settings(), service=tracing.API_SERVICE) is None
    assert not tracing.enabled()
    assert not tracing.tracer().start_span("nothing").get_span_context().is_valid


def test_a_protocol_other_than_otlp_http_is_refused_in_one_line(monkeypatch: Any) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ConfigurationError, match="OTEL_EXPORTER_OTLP_PROTOCOL=grpc"):
        tracing.setup(Settings(otel=True), service=tracing.WORKER_SERVICE)
    assert not tracing.enabled()


async def test_a_run_resumed_after_approval_is_traced_from_the_decision(
    deploy: Any, workdir: Path, web_server: WebServer
) -> None:
    """The decision's request starts the trace of the run's going on: its enqueue, the run, the approved
    call (PydanticAI's tool span), the model after it and the write. The worker's spans carry the id of
    the request that started the run, as its log lines do."""
    path = workdir / "tracing-assistants.toml"
    path.write_text(assistants_toml(web_url=web_server.url))
    with Collector().running() as collector:
        running: Deployment = await deploy(
            {
                "SWITCHBOARD_ASSISTANTS_FILE": str(path),
                "SB_TEST_BOX_LOG": str(workdir / "box.log"),
                "SB_TEST_SECRET": SECRET,
                "SB_TEST_WEB_TOKEN": WEB_TOKEN,
                "SWITCHBOARD_OTEL": "true",
                "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            }
        )
        mark = marker()
        started_id, decided_id = f"trace-ask-{mark}", f"trace-approve-{mark}"
        async with running.http("alice") as http:
            asked = await http.post(
                "/v1/chat/completions",
                json={"model": "helper", "messages": [{"role": "user", "content": append_call(mark)}]},
                headers={"X-Request-ID": started_id},
            )
            assert asked.status_code == 200, asked.text
            run_id = asked.headers["x-run-id"]
            [pending] = (await http.get(f"/v1/runs/{run_id}")).json()["pending_approvals"]
            decided = await http.post(
                f"/v1/runs/{run_id}/approvals",
                json={"call_id": pending["call_id"], "decision": "approve"},
                headers={"X-Request-ID": decided_id},
            )
            assert decided.status_code == 200, decided.text
        request_name = "POST /v1/runs/{run_id}/approvals"
        tool_name = "execute_tool box_append_line"
        tree = Tree(await wait_for_trace(collector, decided_id, request_name, "run helper", tool_name, "write outcome"))
        request, enqueue, run = tree.one(request_name), tree.one("enqueue run_chat"), tree.one("run helper")
        assert (request.kind, request.parent_id) == (SERVER, "")
        assert (enqueue.parent_id, run.parent_id) == (request.span_id, enqueue.span_id)
        tool, write = tree.one(tool_name), tree.one("write outcome")
        [model] = tree.named("chat fake-model")
        assert run in tree.ancestors(tool) and run in tree.ancestors(model) and write.parent_id == run.span_id
        assert tool.end_ns <= model.start_ns and model.end_ns <= write.start_ns
        for span in tree.spans:
            expected = decided_id if span.service == "switchboard-api" else started_id
            assert span.attributes.get(REQUEST_ID) == expected, f"{span}:\n{dump(tree.spans)}"
