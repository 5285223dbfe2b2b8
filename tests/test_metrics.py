"""Prometheus metrics, scraped from real processes after real runs: the API's `/metrics` and a worker's port.

The names and labels are a contract with dashboards and alerts, so each is checked by name. A worker
counts a run in its job's last lines, after the client has its answer, so its counts are polled for.
"""

from __future__ import annotations

import ast
import asyncio
import json
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx2
import openai
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from domain.settings import Settings
from tests._services import free_port
from tests.deployment import Deployment

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TOKEN = "metrics-token-for-tests"

# Sample name -> the label names each of its series carries.
API_SAMPLES: Mapping[str, frozenset[str]] = {
    "switchboard_open_streams": frozenset(),
    "switchboard_queue_depth": frozenset(),
    "switchboard_queue_oldest_age_seconds": frozenset(),
    "switchboard_dependency_errors_total": frozenset({"dependency"}),
}
WORKER_SAMPLES: Mapping[str, frozenset[str]] = {
    "switchboard_runs_started_total": frozenset({"assistant"}),
    "switchboard_runs_finished_total": frozenset({"assistant", "status"}),
    "switchboard_queue_wait_seconds_count": frozenset(),
    "switchboard_queue_wait_seconds_bucket": frozenset({"le"}),
    "switchboard_ttft_seconds_count": frozenset(),
    "switchboard_run_duration_seconds_count": frozenset(),
    "switchboard_tool_calls_total": frozenset({"tool", "outcome"}),
    "switchboard_approvals_pending": frozenset(),
    "switchboard_model_tokens_total": frozenset({"direction"}),
    "switchboard_reconciler_actions_total": frozenset({"action"}),
    "switchboard_dependency_errors_total": frozenset({"dependency"}),
}


def parse(exposition: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def assert_contract(samples: Samples, contract: Mapping[str, frozenset[str]]) -> None:
    for name, label_names in contract.items():
        found = [frozenset(key for key, _ in labels) for sample, labels in samples if sample == name]
        assert found, f"{name} is missing"
        assert all(labels == label_names for labels in found), f"{name} has labels {found}"


async def scrape_api(running: Deployment, **headers: str) -> httpx2.Response:
    async with running.http(user=None) as client:
        return await client.get("/metrics", headers=headers)


async def scrape_worker(port: int) -> Samples:
    async with httpx2.AsyncClient(timeout=10) as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    return parse(response.text)


async def worker_until(port: int, done: Callable[[Samples], bool], timeout_s: float = 15.0) -> Samples:
    deadline = time.monotonic() + timeout_s
    while True:
        samples = await scrape_worker(port)
        if done(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.05)


async def test_the_api_and_a_worker_serve_every_metric_and_count_real_runs(deploy: Any) -> None:
    port = free_port()
    running: Deployment = await deploy(
        {"SWITCHBOARD_WORKER_METRICS_PORT": str(port), "SWITCHBOARD_WORKER_METRICS_HOST": "127.0.0.1"}
    )
    before = await scrape_worker(port)
    # Every series but the tool calls' (their tools are the model's choice) is there, at 0, before any run.
    assert_contract(before, {name: labels for name, labels in WORKER_SAMPLES.items() if "tool_calls" not in name})
    assert ("switchboard_runs_finished_total", frozenset({("assistant", "todo"), ("status", "failed")})) in before

    client = running.openai()
    # A plain answer, a streamed one (scraped while it streams) and one that calls a todo tool.
    await client.chat.completions.create(model="assistant", messages=[{"role": "user", "content": "hello"}])
    stream = await client.chat.completions.create(
        model="assistant",
        messages=[{"role": "user", "content": "[[tokens:20]] [[tokendelay:0.05]]"}],
        stream=True,
    )
    chunks = aiter(stream)
    await anext(chunks)
    while_streaming = await scrape_api(running)
    async for _ in chunks:
        pass
    tool_call = "[[tool:add_task " + json.dumps({"title": "metrics"}) + "]]"
    await client.chat.completions.create(model="todo", messages=[{"role": "user", "content": tool_call}])
    # And one the model's provider fails: no text, so no time to first token.
    with pytest.raises(openai.APIStatusError):
        await client.chat.completions.create(model="assistant", messages=[{"role": "user", "content": "[[error:500]]"}])

    assert while_streaming.status_code == 200, "open unless SWITCHBOARD_METRICS_TOKEN is set"
    assert value(parse(while_streaming.text), "switchboard_open_streams") >= 1
    after_api = await scrape_api(running)
    assert after_api.headers["content-type"].startswith("text/plain")
    api = parse(after_api.text)
    assert_contract(api, API_SAMPLES)
    assert value(api, "switchboard_open_streams") == 0
    assert value(api, "switchboard_queue_depth") == 0

    def finished(samples: Samples) -> bool:
        done = value(samples, "switchboard_runs_finished_total", assistant="assistant", status="succeeded")
        done_todo = value(samples, "switchboard_runs_finished_total", assistant="todo", status="succeeded")
        failed = value(samples, "switchboard_runs_finished_total", assistant="assistant", status="failed")
        return done >= 2 and done_todo >= 1 and failed >= 1

    after = await worker_until(port, finished)
    assert finished(after), after
    assert_contract(after, WORKER_SAMPLES)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("switchboard_runs_started_total", assistant="assistant") == 3
    assert moved("switchboard_runs_started_total", assistant="todo") == 1
    assert moved("switchboard_runs_finished_total", assistant="assistant", status="succeeded") == 2
    assert moved("switchboard_runs_finished_total", assistant="todo", status="succeeded") == 1
    assert moved("switchboard_runs_finished_total", assistant="assistant", status="failed") == 1
    assert moved("switchboard_dependency_errors_total", dependency="llm") == 1
    assert moved("switchboard_tool_calls_total", tool="add_task", outcome="ok") == 1
    assert moved("switchboard_model_tokens_total", direction="input") > 0
    assert moved("switchboard_model_tokens_total", direction="output") > 0
    assert moved("switchboard_queue_wait_seconds_count") == 4
    assert moved("switchboard_ttft_seconds_count") == 3
    assert moved("switchboard_run_duration_seconds_count") == 4
    assert value(after, "switchboard_approvals_pending") == 0
    for action in ("timed_out", "worker_lost", "cancelled", "retried", "requeued", "approval_expired"):
        assert ("switchboard_reconciler_actions_total", frozenset({("action", action)})) in after
    for dependency in ("database", "redis", "llm"):
        assert ("switchboard_dependency_errors_total", frozenset({("dependency", dependency)})) in after
        assert ("switchboard_dependency_errors_total", frozenset({("dependency", dependency)})) in api


async def test_a_metrics_token_is_asked_for_and_the_worker_port_is_off_by_default(deploy: Any) -> None:
    assert Settings.model_fields["worker_metrics_port"].default is None
    running: Deployment = await deploy({"SWITCHBOARD_METRICS_TOKEN": TOKEN})

    assert (await scrape_api(running)).status_code == 401
    refused = await scrape_api(running, Authorization="Bearer not-the-token")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    # An API key is not the metrics token.
    assert (await scrape_api(running, Authorization="Bearer key-alice")).status_code == 401
    allowed = await scrape_api(running, Authorization=f"Bearer {TOKEN}")
    assert allowed.status_code == 200
    assert_contract(parse(allowed.text), API_SAMPLES)

    (worker,) = running.live_workers()
    listening = [c for c in psutil.Process(worker.pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening == []


async def test_a_worker_whose_metrics_port_is_taken_stops_with_one_line(deploy: Any) -> None:
    running: Deployment = await deploy(start_worker=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        running.env.update(SWITCHBOARD_WORKER_METRICS_PORT=str(port), SWITCHBOARD_WORKER_METRICS_HOST="127.0.0.1")
        worker = running.start_worker()
        code = await asyncio.to_thread(worker.wait, 30)
    assert code != 0
    log = running.worker_log(worker)
    assert f"SWITCHBOARD_WORKER_METRICS_PORT: cannot listen on 127.0.0.1:{port}" in log
    assert "Traceback" not in log


def test_every_stream_a_surface_serves_counts_in_open_streams() -> None:
    root = Path(__file__).resolve().parent.parent / "api"
    uncounted = [
        f"{path.relative_to(root.parent)}:{node.lineno}"
        for path in root.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == "event_stream"
        and "open_streams" not in {keyword.arg for keyword in node.keywords}
    ]
    assert uncounted == [], "pass open_streams=state.metrics.open_streams to event_stream"
