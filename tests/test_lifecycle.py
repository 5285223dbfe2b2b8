"""Runs that outlive their time limit, their worker, or the API process that started them.

Processes get signalled and killed here, so each test starts a deployment of its own: one with a
one-second run timeout, one whose worker is killed (with a short lease, so its run is retried soon),
one whose worker is stopped, and one whose API is stopped. None depends on what another left behind.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import uuid
from datetime import timedelta
from typing import Any

import pytest_asyncio

from tests.conftest import DeployFactory
from tests.deployment import Deployment

# A running attempt's lease, short here so that a dead worker's run is retried within seconds. The
# worker renews it every third of a lease; once it lapses, another worker's reconciler retries the run.
LEASE_S = 3.0


def marker() -> str:
    return uuid.uuid4().hex[:12]


@pytest_asyncio.fixture(loop_scope="session")
async def timeout_deployment(deploy: DeployFactory) -> Deployment:
    return await deploy({"SWITCHBOARD_RUN_TIMEOUT_S": "1"})


@pytest_asyncio.fixture(loop_scope="session")
async def kill_deployment(deploy: DeployFactory) -> Deployment:
    """One worker, to be killed mid-run."""
    return await deploy({"SWITCHBOARD_RUN_LEASE_S": f"{LEASE_S:g}"})


@pytest_asyncio.fixture(loop_scope="session")
async def stop_deployment(deploy: DeployFactory) -> Deployment:
    """One worker, to be asked to stop mid-run."""
    return await deploy()


@pytest_asyncio.fixture(loop_scope="session")
async def api_deployment(deploy: DeployFactory) -> Deployment:
    """Its API is stopped by the test, so nobody else can use it."""
    return await deploy()


class Stream:
    """A streaming chat request read in the background: its `data:` payloads, and when it ended."""

    def __init__(self, running: Deployment, text: str, key: str) -> None:
        self.data: list[str] = []
        self.first_content = asyncio.Event()
        self._task = asyncio.create_task(self._read(running, text, key))

    async def _read(self, running: Deployment, text: str, key: str) -> None:
        payload = {"model": "assistant", "messages": [{"role": "user", "content": text}], "stream": True}
        try:
            async with (
                running.http("alice") as client,
                client.stream(
                    "POST", "/v1/chat/completions", json=payload, headers={"X-Conversation-ID": key}
                ) as response,
            ):
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    self.data.append(line.removeprefix("data:").strip())
                    if self.text:
                        self.first_content.set()
        finally:
            self.first_content.set()

    async def finished(self, timeout_s: float) -> None:
        await asyncio.wait_for(asyncio.shield(self._task), timeout_s)

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return [json.loads(item) for item in self.data if item != "[DONE]"]

    @property
    def text(self) -> str:
        return "".join(
            choice["delta"].get("content") or "" for chunk in self.chunks for choice in chunk.get("choices", [])
        )

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [chunk["error"] for chunk in self.chunks if "error" in chunk]


async def run_of(running: Deployment, key: str) -> str:
    rows = await running.wait_for(
        "SELECT m.run_id FROM messages m JOIN conversations c ON c.id = m.conversation_id "
        "WHERE c.key = :key AND m.role = 'user'",
        key=key,
    )
    assert rows, f"no stored turn for {key}"
    return str(rows[0]["run_id"])


def live_workers(running: Deployment) -> list[subprocess.Popen[bytes]]:
    return [worker for worker in running.workers if worker.poll() is None]


async def wait_until_exited(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """The exit status, or None if it is still running after `timeout_s`."""
    try:
        return await asyncio.to_thread(process.wait, max(timeout_s, 0.1))
    except subprocess.TimeoutExpired:
        return None


# ------------------------------------------------------------------ (a) run timeout


async def test_a_run_past_its_time_limit_fails_with_an_error_event(timeout_deployment: Deployment) -> None:
    running = timeout_deployment
    key = f"timeout-{marker()}"
    stream = Stream(running, "[[hang]]", key)
    # A hang guard far below the default run timeout (300 s): only the deployment's 1 s can end it.
    await stream.finished(timeout_s=15)

    assert stream.data[-1] == "[DONE]", stream.data
    assert json.loads(stream.data[-2])["error"]["code"] == "run_timeout", stream.data
    assert stream.text == ""

    run_id = await run_of(running, key)
    [run] = await running.wait_for(
        "SELECT status, error_code, error FROM runs WHERE id = :id AND status = 'failed'", id=run_id
    )
    assert run["error_code"] == "run_timeout"
    assert run["error"] == "the run took longer than 1 s"
    assert [row["role"] for row in await running.messages("alice", key)] == ["user"]


# ------------------------------------------------------------------ (d) worker SIGKILL mid-run


async def test_a_run_whose_worker_died_is_retried_by_another(kill_deployment: Deployment) -> None:
    running = kill_deployment
    [first_worker] = live_workers(running)
    key = f"worker-sigkill-{marker()}"
    text = "a run that survives the death of its worker. " * 2  # ~2.5 s at 0.1 s per 4 characters
    stream = Stream(running, f"[[reply:{text}]] [[tokendelay:0.1]]", key)
    await asyncio.wait_for(stream.first_content.wait(), 15)
    run_id = await run_of(running, key)
    # The attempt holds the deployment's short lease, not the default one.
    [lease] = await running.query("SELECT lease_expires_at - now() AS remaining FROM runs WHERE id = :id", id=run_id)
    assert lease["remaining"] <= timedelta(seconds=LEASE_S), lease
    first_worker.kill()
    assert await wait_until_exited(first_worker, timeout_s=5) == -signal.SIGKILL
    running.start_worker()

    rows = await running.wait_for(
        "SELECT status, attempt FROM runs WHERE id = :id AND status IN ('succeeded', 'failed')",
        id=run_id,
        timeout_s=LEASE_S + 30,
    )
    assert rows, f"the run was not retried within {LEASE_S + 30:g} s:\n{running.logs()}"
    [run] = rows
    assert (run["status"], run["attempt"]) == ("succeeded", 2)
    replies = await running.query("SELECT content FROM messages WHERE run_id = :id AND role = 'assistant'", id=run_id)
    assert [row["content"] for row in replies] == [text]

    # The client that stayed connected had part of attempt 1's answer; attempt 2's cannot be spliced
    # onto it, so the stream ends with an error that says where the answer went.
    await stream.finished(timeout_s=10)
    assert [error["code"] for error in stream.errors] == ["run_restarted"], stream.data
    assert stream.data[-1] == "[DONE]"
    assert text.startswith(stream.text) and stream.text != text


# ------------------------------------------------------------------ (b) worker SIGTERM mid-run


async def test_a_worker_asked_to_stop_finishes_its_run_first(stop_deployment: Deployment) -> None:
    running = stop_deployment
    [worker] = live_workers(running)
    # A first round trip: the worker is up and idle.
    await running.openai().chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "[[reply:ready]]"}], timeout=30
    )

    key = f"worker-sigterm-{marker()}"
    text = "finish what you started, then stop. " * 2 + "done."  # ~2 s at 0.1 s per 4 characters
    stream = Stream(running, f"[[reply:{text}]] [[tokendelay:0.1]]", key)
    await asyncio.wait_for(stream.first_content.wait(), 15)
    assert stream.text and stream.text != text
    worker.send_signal(signal.SIGTERM)

    await stream.finished(timeout_s=20)
    assert stream.errors == []
    assert stream.data[-1] == "[DONE]"
    assert stream.text == text

    assert [(row["role"], row["content"]) for row in await running.messages("alice", key)][-1] == ("assistant", text)
    run_id = await run_of(running, key)
    [run] = await running.query("SELECT status, attempt FROM runs WHERE id = :id", id=run_id)
    # Attempt 1: the run was finished by the worker that was stopped, not retried elsewhere.
    assert (run["status"], run["attempt"]) == ("succeeded", 1)

    assert await wait_until_exited(worker, timeout_s=15) == 0, running.logs()


# ------------------------------------------------------------------ (c) API SIGTERM with an open stream


async def test_an_api_asked_to_stop_ends_open_streams_and_the_run_is_still_stored(
    api_deployment: Deployment,
) -> None:
    running = api_deployment
    assert running.api is not None
    key = f"api-sigterm-{marker()}"
    text = "this answer outlives the api process that asked for it. " * 3  # ~4 s at 0.1 s per 4 characters
    stream = Stream(running, f"[[reply:{text}]] [[tokendelay:0.1]]", key)
    await asyncio.wait_for(stream.first_content.wait(), 15)
    running.api.send_signal(signal.SIGTERM)

    await stream.finished(timeout_s=15)
    assert stream.data[-1] == "[DONE]", stream.data
    assert [error["code"] for error in stream.errors] == ["server_shutdown"]
    assert json.loads(stream.data[-2])["error"]["code"] == "server_shutdown"
    assert text.startswith(stream.text) and stream.text != text

    # uvicorn shuts down gracefully, then re-raises the signal it caught: either exit status is clean.
    assert await wait_until_exited(running.api, timeout_s=15) in (0, -signal.SIGTERM), running.log_text("api")
    assert "Application shutdown complete" in running.log_text("api")

    # The run was never the API's to finish: the worker completes and stores it.
    run_id = await run_of(running, key)
    assert await running.wait_for(
        "SELECT status FROM runs WHERE id = :id AND status = 'succeeded'", id=run_id, timeout_s=15
    )
    assert [(row["role"], row["content"]) for row in await running.messages("alice", key)] == [
        ("user", f"[[reply:{text}]] [[tokendelay:0.1]]"),
        ("assistant", text),
    ]
