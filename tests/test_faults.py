"""Faults injected into real processes under load: every accepted turn reaches an end, whatever fails.

Issue 8, section 5, tests 1 to 6. Each test starts its own Redis (and, for the database fault, its own
PostgreSQL cluster), an API and workers; it makes runs stream for a few seconds through the fake model,
then kills, stops or pauses one of the processes, and counts what an operator would count: runs
started, ended, lost and duplicated, streams cut, processes gone, and how long recovery took.

Leases are short (3 s) so that a lost attempt is noticed within seconds. Each test prints one line of
figures (`pytest -s` shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests._services import PostgresServer, RedisServer, ServiceUnavailable, _unavailable
from tests.deployment import Deployment
from tests.fake_llm import FakeLLM

LEASE_S = 3.0
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
FAULT_ENV = {
    "SWITCHBOARD_RUN_LEASE_S": f"{LEASE_S:g}",
    "SWITCHBOARD_RECONCILE_INTERVAL_S": "1",
    # A stopping worker does not wait long for runs the test left behind.
    "SWITCHBOARD_WORKER_GRACE_S": "2",
    # Fifty streams from three users: the per-user cap is not what these tests are about.
    "SWITCHBOARD_MAX_ACTIVE_RUNS_PER_USER": "1000",
    # These tests start many worker processes, each importing the Agents SDK, OpenAI, MCP...: let them
    # share compiled bytecode in a cache of their own (nothing is written beside the sources), even where
    # the environment says not to write any.
    "PYTHONDONTWRITEBYTECODE": "",
    "PYTHONPYCACHEPREFIX": str(CACHE / "switchboard-tests" / "pycache"),
}
USERS = ("alice", "bob", "carol")
TERMINAL = ("succeeded", "failed", "cancelled")


def marker() -> str:
    return uuid.uuid4().hex[:10]


def slow_reply(text: str, token_delay_s: float = 0.1) -> str:
    """A user message the fake model answers with `text`, 4 characters every `token_delay_s`."""
    return f"[[reply:{text}]] [[tokendelay:{token_delay_s:g}]]"


def add_task(title: str) -> str:
    """A todo message whose model calls `add_task`, then answers slowly (about 6 s in all)."""
    return "[[tool:add_task " + json.dumps({"title": title}) + "]] [[delay:0.5]] [[tokendelay:0.2]]"


# ------------------------------------------------------------------ processes


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A Redis of the test's own, which it may kill."""
    try:
        server = RedisServer()
    except ServiceUnavailable as exc:
        _unavailable(exc)
    with server:
        yield server


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of the test's own, which it may stop."""
    try:
        server = PostgresServer()
    except ServiceUnavailable as exc:
        _unavailable(exc)
    with server:
        yield server


@asynccontextmanager
async def deployed(
    fake_llm: FakeLLM, database: str, redis: RedisServer, *, workers: int, **env: str
) -> AsyncIterator[Deployment]:
    running = Deployment(
        database=database,
        redis_url=redis.url,
        llm_base_url=fake_llm.base_url,
        env={**FAULT_ENV, **env},
        workers=workers,
        claim_redis_db=False,
    )
    try:
        yield await running.start()
    finally:
        for worker in running.live_workers():
            os.kill(worker.pid, signal.SIGCONT)  # a stopped process would never hear SIGTERM
        await running.stop()


async def killed(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    assert await asyncio.to_thread(process.wait, 10) == -signal.SIGKILL


def still_running(running: Deployment) -> dict[str, int | None]:
    """Exit status of each process that exited without the test killing it (empty: all alive)."""
    processes = {"api": running.api, **{f"worker-{i}": w for i, w in enumerate(running.workers)}}
    return {name: p.returncode for name, p in processes.items() if p is not None and p.poll() is not None}


def log_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
    return lines


def logged(running: Deployment, worker: subprocess.Popen[bytes], event: str, **fields: Any) -> list[dict[str, Any]]:
    return [
        line
        for line in log_lines(running.worker_log(worker))
        if line.get("event") == event and all(line.get(key) == value for key, value in fields.items())
    ]


async def holder_of(
    running: Deployment, run_id: str, *, attempt: int, timeout_s: float
) -> subprocess.Popen[bytes] | None:
    """The live worker whose log says it started `attempt` of the run, once one does."""
    deadline = time.monotonic() + timeout_s
    while True:
        for worker in running.live_workers():
            if logged(running, worker, "run.started", run_id=run_id, attempt=attempt):
                return worker
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.1)


async def until(
    condition: Callable[[], Awaitable[bool]],
    *,
    timeout_s: float,
    interval_s: float = 0.1,
    since: float | None = None,
) -> float | None:
    """Poll `condition` until it holds: the seconds since `since` (default: now) when it first did, or None
    if it did not within `timeout_s`."""
    started = time.monotonic()
    while True:
        if await condition():
            return time.monotonic() - (started if since is None else since)
        if time.monotonic() - started > timeout_s:
            return None
        await asyncio.sleep(interval_s)


# ------------------------------------------------------------------ streams


class SseStream:
    """One streaming request read in the background: its status, its events, and how it ended."""

    def __init__(
        self, running: Deployment, *, user: str, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> None:
        self.user = user
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = ""
        # (event name, data) pairs; "message" for data without an event name.
        self.events: list[tuple[str, str]] = []
        # Why the connection broke, if it broke instead of ending.
        self.cut: str | None = None
        self.first_event = asyncio.Event()
        self.ended_at: float | None = None
        self._task = asyncio.create_task(self._read(running, path, body, headers))

    async def _read(self, running: Deployment, path: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        name = "message"
        try:
            async with (
                running.http(self.user) as client,
                client.stream("POST", path, json=body, headers=headers) as response,
            ):
                self.status = response.status_code
                self.headers = dict(response.headers)
                if response.status_code != 200:
                    self.body = (await response.aread()).decode(errors="replace")
                    return
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        name = line.removeprefix("event:").strip()
                    elif line.startswith("data:"):
                        self.events.append((name, line.removeprefix("data:").strip()))
                        name = "message"
                        self.first_event.set()
        except httpx2.TransportError as exc:
            self.cut = f"{type(exc).__name__}: {exc}"
        finally:
            self.ended_at = time.monotonic()
            self.first_event.set()

    @property
    def done(self) -> bool:
        return self._task.done()

    async def finished(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), max(timeout_s, 0.01))
        return self._task.done()

    def close(self) -> None:
        self._task.cancel()

    @property
    def data(self) -> list[str]:
        return [data for _, data in self.events]

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return [json.loads(data) for data in self.data if data != "[DONE]"]

    @property
    def text(self) -> str:
        return "".join(
            (choice.get("delta") or {}).get("content") or ""
            for chunk in self.chunks
            for choice in chunk.get("choices", [])
        )

    def ending(self) -> str | None:
        """How an OpenAI stream ended: `finish:<reason>` or `error:<code>`, then `[DONE]`; None otherwise."""
        if self.cut is not None or self.status != 200 or len(self.data) < 2 or self.data[-1] != "[DONE]":
            return None
        last = json.loads(self.data[-2])
        if "error" in last:
            return f"error:{last['error'].get('code')}"
        reasons = [choice.get("finish_reason") for choice in last.get("choices", [])]
        return f"finish:{reasons[0]}" if reasons and reasons[0] else None

    def todo_ending(self) -> str | None:
        """How a todo stream ended: `done`, or `error:<code>`; None otherwise."""
        if self.cut is not None or self.status != 200 or not self.events:
            return None
        name, data = self.events[-1]
        if name == "done":
            return "done"
        if name == "error":
            return f"error:{json.loads(data).get('code')}"
        return None

    def describe(self) -> str:
        tail = self.events[-3:]
        return f"status={self.status} cut={self.cut} events={len(self.events)} tail={tail} body={self.body[:300]}"


def openai_stream(running: Deployment, user: str, key: str, content: str) -> SseStream:
    body = {"model": "assistant", "messages": [{"role": "user", "content": content}], "stream": True}
    return SseStream(running, user=user, path="/v1/chat/completions", body=body, headers={"X-Conversation-ID": key})


def todo_stream(running: Deployment, user: str, message: str) -> SseStream:
    return SseStream(
        running, user=user, path=f"/api/{user}/chat", body={"message": message}, headers={"Accept": "text/event-stream"}
    )


async def all_started(streams: list[SseStream], timeout_s: float, *, at_least_live: int | None = None) -> int:
    """Wait until every stream has shown something; how many are still open. Every one, unless `at_least_live`
    says how many must be (on a loaded machine the first runs may be done before the last start)."""
    await asyncio.wait_for(asyncio.gather(*(stream.first_event.wait() for stream in streams)), timeout_s)
    refused = [stream.describe() for stream in streams if stream.status != 200]
    assert not refused, f"streams refused: {refused[:5]}"
    live = sum(1 for stream in streams if not stream.done)
    needed = len(streams) if at_least_live is None else at_least_live
    ended_early = [stream.describe() for stream in streams if stream.done]
    assert live >= needed, f"only {live} streams were live when the fault came; ended: {ended_early[:3]}"
    return live


async def all_finished(streams: list[SseStream], timeout_s: float) -> list[SseStream]:
    """The streams still open after `timeout_s` (they are cancelled)."""
    deadline = time.monotonic() + timeout_s
    for stream in streams:
        await stream.finished(deadline - time.monotonic())
    hanging = [stream for stream in streams if not stream.done]
    for stream in hanging:
        stream.close()
    return hanging


# ------------------------------------------------------------------ the database


async def run_ids(running: Deployment, keys: dict[str, str]) -> dict[str, str]:
    """Conversation key -> the id of the run of its (one) turn, for keys mapped to their users."""
    rows = await running.query(
        "SELECT c.key, c.user_id, m.run_id FROM messages m JOIN conversations c ON c.id = m.conversation_id "
        "WHERE m.role = 'user' AND c.key = ANY(:keys)",
        keys=list(keys),
    )
    found = {row["key"]: str(row["run_id"]) for row in rows if keys[row["key"]] == row["user_id"]}
    assert len(found) == len(rows) == len(keys), f"turns stored: {len(rows)} rows for {len(keys)} conversations"
    return found


async def runs_of(running: Deployment, ids: list[str]) -> dict[str, dict[str, Any]]:
    rows = await running.query(
        "SELECT id, status, attempt, error_code, error, usage, finished_at FROM runs WHERE id = ANY(:ids)", ids=ids
    )
    return {row["id"]: row for row in rows}


async def answers_of(running: Deployment, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Run id -> its stored assistant messages (one, for a run that succeeded once)."""
    rows = await running.query(
        "SELECT id, run_id, item_id, content, created_at FROM messages "
        "WHERE role = 'assistant' AND run_id = ANY(:ids) ORDER BY id",
        ids=ids,
    )
    answers: dict[str, list[dict[str, Any]]] = {run_id: [] for run_id in ids}
    for row in rows:
        answers[row["run_id"]].append(row)
    return answers


async def unfinished(running: Deployment, ids: list[str]) -> int:
    return sum(1 for run in (await runs_of(running, ids)).values() if run["status"] not in TERMINAL)


async def ended(running: Deployment, ids: list[str]) -> bool:
    runs = await runs_of(running, ids)
    return len(runs) == len(ids) and all(run["status"] in TERMINAL for run in runs.values())


# ------------------------------------------------------------------ new requests while a dependency is away


@dataclass(frozen=True)
class Probe:
    sent: float
    answered: float
    status: int | None
    retry_after: str | None
    detail: str


async def probe_until(running: Deployment, stop: asyncio.Event, probes: list[Probe]) -> None:
    """New (short, non-streaming) requests, one after another, until `stop` is set."""
    async with running.http("alice") as client:
        number = 0
        while not stop.is_set():
            number += 1
            body = {"model": "assistant", "messages": [{"role": "user", "content": f"[[reply:probe {number}]]"}]}
            sent = time.monotonic()
            try:
                response = await client.post("/v1/chat/completions", json=body, timeout=15)
                status, retry_after, detail = response.status_code, response.headers.get("retry-after"), response.text
            except httpx2.TransportError as exc:
                status, retry_after, detail = None, None, f"{type(exc).__name__}: {exc}"
            probes.append(Probe(sent, time.monotonic(), status, retry_after, detail[:300]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)


@asynccontextmanager
async def probing(running: Deployment) -> AsyncIterator[list[Probe]]:
    probes: list[Probe] = []
    stop = asyncio.Event()
    task = asyncio.create_task(probe_until(running, stop, probes))
    try:
        yield probes
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 20)
        except TimeoutError:
            task.cancel()


def answered_between(probes: list[Probe], start: float, end: float) -> list[Probe]:
    return [probe for probe in probes if probe.sent >= start and probe.answered <= end]


# ------------------------------------------------------------------ 1. a worker SIGKILLed under load


async def test_sigkill_one_of_two_workers_with_50_live_streams(
    fake_llm: FakeLLM, postgres_url: str, redis_server: RedisServer
) -> None:
    async with deployed(fake_llm, postgres_url, redis_server, workers=2) as running:
        victim, survivor = running.workers
        tag = marker()
        general: dict[str, tuple[SseStream, str]] = {}  # key -> (stream, the answer it asks for)
        todo: list[tuple[SseStream, str]] = []  # (stream, the task title it asks for)
        for index in range(50):
            user = USERS[index % len(USERS)]
            if index % 2 == 0:
                key = f"kill-worker-{tag}-{index}"
                text = f"answer {index} of {tag}: " + "steady tokens " * 22  # about 8 s
                general[key] = (openai_stream(running, user, key, slow_reply(text)), text)
            else:
                title = f"fault task {tag} {index}"
                todo.append((todo_stream(running, user, add_task(title)), title))
        streams = [stream for stream, _ in general.values()] + [stream for stream, _ in todo]
        live = await all_started(streams, timeout_s=30, at_least_live=40)
        for stream, _ in todo:
            assert stream.headers.get("x-conversation-id"), stream.describe()

        keys = {key: stream.user for key, (stream, _) in general.items()}
        keys |= {stream.headers["x-conversation-id"]: stream.user for stream, _ in todo}
        ids = await run_ids(running, keys)
        run_of_stream = {id(stream): ids[key] for key, (stream, _) in general.items()}
        run_of_stream |= {id(stream): ids[stream.headers["x-conversation-id"]] for stream, _ in todo}

        started_on_victim = {line["run_id"] for line in logged(running, victim, "run.started")}
        completed_on_victim = {line["run_id"] for line in logged(running, victim, "run.completed")}
        held = started_on_victim - completed_on_victim
        assert held, "the worker to be killed was running none of the runs"
        await killed(victim)

        all_ids = list(ids.values())
        recovered_s = await until(lambda: ended(running, all_ids), timeout_s=40, interval_s=0.2)
        hanging = await all_finished(streams, timeout_s=15)
        runs = await runs_of(running, all_ids)
        answers = await answers_of(running, all_ids)
        completions = Counter(
            line["run_id"]
            for worker in running.workers
            for line in logged(running, worker, "run.completed", stored=True)
            if line.get("run_id") in runs
        )
        tasks = await running.query(
            "SELECT user_id, title, count(*) AS n FROM tasks WHERE title LIKE :prefix GROUP BY user_id, title",
            prefix=f"fault task {tag} %",
        )
        statuses = Counter(run["status"] for run in runs.values())
        retried = sum(1 for run in runs.values() if run["attempt"] > 1)
        endings = Counter(stream.ending() for stream, _ in general.values())
        endings.update(stream.todo_ending() for stream, _ in todo)
        print(
            f"\n[faults 1] runs started {len(all_ids)}, live at the kill {live}, "
            f"held by the killed worker {len(held)}, retried {retried}; "
            f"ended {dict(statuses)}; lost {len(all_ids) - sum(statuses[s] for s in TERMINAL)}; "
            f"duplicate answers {sum(1 for a in answers.values() if len(a) > 1)}; "
            f"duplicate tasks {sum(1 for t in tasks if t['n'] > 1)}; "
            f"all ended {recovered_s and round(recovered_s, 1)} s after the kill; stream endings {dict(endings)}"
        )

        assert recovered_s is not None, f"runs not ended 40 s after the kill: {dict(statuses)}\n{running.logs()}"
        assert statuses == {"succeeded": 50}, [run for run in runs.values() if run["status"] != "succeeded"]
        assert retried >= 1, "no run was retried: the kill hit nothing"
        # Only the killed worker's runs were run again.
        assert {run_id for run_id, run in runs.items() if run["attempt"] > 1} <= held, runs
        duplicated = {run_id: rows for run_id, rows in answers.items() if len(rows) != 1}
        assert not duplicated, f"runs without exactly one stored answer: {duplicated}"
        assert all(count == 1 for count in completions.values()) and len(completions) == 50, completions
        for key, (_, text) in general.items():
            assert answers[ids[key]][0]["content"] == text
        for stream, title in todo:
            [answer] = answers[run_of_stream[id(stream)]]
            assert answer["content"].startswith("tool said: ") and title in answer["content"], answer
        assert sorted((t["title"], t["n"]) for t in tasks) == sorted((title, 1) for _, title in todo), tasks
        for key in keys:
            roles = [m["role"] for m in await running.messages(keys[key], key)]
            assert roles == ["user", "assistant"], (key, roles)

        assert not hanging, [stream.describe() for stream in hanging]
        bad = [stream.describe() for stream, _ in general.values() if stream.ending() is None]
        bad += [stream.describe() for stream, _ in todo if stream.todo_ending() is None]
        assert not bad, f"streams without a terminal event: {bad[:5]}"
        # The only error a client may see: the run it was following started again elsewhere.
        assert set(endings) <= {"finish:stop", "done", "error:run_restarted"}, endings
        for stream, text in general.values():
            if stream.ending() == "finish:stop":
                assert stream.text == text
        assert survivor.poll() is None and running.api is not None and running.api.poll() is None


# ------------------------------------------------------------------ 2. Redis SIGKILLed and restarted empty


async def test_redis_killed_and_restarted_empty_with_20_live_streams(
    fake_llm: FakeLLM, postgres_url: str, redis_server: RedisServer
) -> None:
    down_s = 4.0
    async with deployed(fake_llm, postgres_url, redis_server, workers=2) as running:
        tag = marker()
        texts = {f"redis-{tag}-{i}": f"answer {i} outlives redis: " + "slow and steady " * 18 for i in range(20)}
        users = {key: USERS[i % len(USERS)] for i, key in enumerate(texts)}
        streams = {key: openai_stream(running, users[key], key, slow_reply(text)) for key, text in texts.items()}
        await all_started(list(streams.values()), timeout_s=30)
        ids = await run_ids(running, users)
        all_ids = list(ids.values())

        running_at_kill = await unfinished(running, all_ids)
        assert running_at_kill, "every run had ended before Redis was killed"
        async with probing(running) as probes:
            await asyncio.to_thread(redis_server.kill)
            killed_at = time.monotonic()
            await asyncio.sleep(down_s)  # the length of the outage, not a condition
            await asyncio.to_thread(redis_server.restart)
            back_at = time.monotonic()

            async def answered_after_return() -> bool:
                return any(p.status == 200 and p.sent >= back_at for p in probes)

            _, runs_ended_s = await asyncio.gather(
                until(answered_after_return, timeout_s=15),
                until(lambda: ended(running, all_ids), timeout_s=3 * LEASE_S + 10, interval_s=0.2, since=back_at),
            )
            hanging = await all_finished(list(streams.values()), timeout_s=15)
            # New requests keep arriving for a while after the first one that succeeds.
            await asyncio.sleep(max(0.0, back_at + 6.0 - time.monotonic()))

        runs = await runs_of(running, all_ids)
        answers = await answers_of(running, all_ids)
        down = answered_between(probes, killed_at, back_at)
        first_ok = min((p.answered - back_at for p in probes if p.status == 200 and p.sent >= back_at), default=None)
        late_failures = [p for p in probes if p.sent >= back_at + 5.0 and p.status != 200]
        endings = Counter(stream.ending() for stream in streams.values())
        statuses = Counter(run["status"] for run in runs.values())
        exited = still_running(running)
        print(
            f"\n[faults 2] runs started {len(all_ids)}, unfinished at the kill {running_at_kill}; "
            f"ended {dict(statuses)} "
            f"{runs_ended_s and round(runs_ended_s, 1)} s after Redis returned; "
            f"duplicate answers {sum(1 for a in answers.values() if len(a) > 1)}; "
            f"probes while down {Counter((p.status, p.retry_after) for p in down)}; "
            f"first new request ok {first_ok and round(first_ok, 1)} s after return; "
            f"failures sent > 5 s after return {len(late_failures)}; "
            f"stream endings {dict(endings)}; exited {exited}"
        )

        assert not exited, f"processes exited: {exited}\n{running.logs()}"
        assert down, f"no request was answered while Redis was down: {probes[:5]}"
        wrong = [p for p in down if p.status != 503 or not p.retry_after]
        assert not wrong, f"answers while Redis was down that were not 503 with Retry-After: {wrong[:5]}"
        assert first_ok is not None and first_ok <= 5.0, (
            f"no new request succeeded within 5 s of Redis's return (first after {first_ok} s): "
            f"{[p for p in probes if p.sent >= back_at][:5]}\n{running.logs()}"
        )
        assert not late_failures, late_failures[:5]
        assert runs_ended_s is not None and runs_ended_s <= 3 * LEASE_S, (
            f"runs not ended within three leases of Redis's return ({runs_ended_s} s): "
            f"{ {run_id: run['status'] for run_id, run in runs.items()} }\n{running.logs()}"
        )
        assert all(len(rows) <= 1 for rows in answers.values()), answers
        assert all(len(answers[run_id]) == 1 for run_id, run in runs.items() if run["status"] == "succeeded")
        assert not hanging, [stream.describe() for stream in hanging]
        bad = {key: stream.describe() for key, stream in streams.items() if stream.ending() is None}
        assert not bad, f"streams that ended without a terminal event and [DONE]: {bad}"


# ------------------------------------------------------------------ 3. PostgreSQL stopped for 10 s


async def test_postgres_stopped_for_10_s_with_10_live_streams(
    fake_llm: FakeLLM, postgres_server: PostgresServer, redis_server: RedisServer
) -> None:
    down_s = 10.0
    async with deployed(fake_llm, postgres_server.url, redis_server, workers=2) as running:
        tag = marker()
        texts = {f"pg-{tag}-{i}": f"answer {i} outlives the database: " + "tick tock " * 18 for i in range(10)}
        users = {key: USERS[i % len(USERS)] for i, key in enumerate(texts)}
        streams = {key: openai_stream(running, users[key], key, slow_reply(text)) for key, text in texts.items()}
        await all_started(list(streams.values()), timeout_s=30)
        ids = await run_ids(running, users)
        all_ids = list(ids.values())

        readyz: list[dict[str, Any]] = []

        async def not_ready() -> bool:
            async with httpx2.AsyncClient(base_url=running.base_url, timeout=5) as client:
                response = await client.get("/readyz")
            readyz.append({"status": response.status_code, **response.json()})
            return response.status_code == 503 and "database" in response.json().get("missing", [])

        running_at_pause = await unfinished(running, all_ids)
        assert running_at_pause, "every run had ended before the database was stopped"
        paused = False
        try:
            async with probing(running) as probes:
                await asyncio.to_thread(postgres_server.pause)
                paused = True
                down_at = time.monotonic()
                not_ready_s = await until(not_ready, timeout_s=5)
                await asyncio.sleep(max(0.0, down_at + down_s - time.monotonic()))  # the outage, not a condition
                await asyncio.to_thread(postgres_server.resume)
                paused = False
                up_at = time.monotonic()
                # The test's own pooled connections died with the server.
                assert running.engine is not None
                await running.engine.dispose()

                async def answered_after_return() -> bool:
                    return any(p.status == 200 and p.sent >= up_at for p in probes)

                first_ok_s, runs_ended_s = await asyncio.gather(
                    until(answered_after_return, timeout_s=20, since=up_at),
                    until(lambda: ended(running, all_ids), timeout_s=30, interval_s=0.2, since=up_at),
                )
        finally:
            if paused:
                await asyncio.to_thread(postgres_server.resume)

        hanging = await all_finished(list(streams.values()), timeout_s=15)
        runs = await runs_of(running, all_ids)
        answers = await answers_of(running, all_ids)
        down = answered_between(probes, down_at, up_at)
        endings = Counter(stream.ending() for stream in streams.values())
        statuses = Counter(run["status"] for run in runs.values())
        exited = still_running(running)
        print(
            f"\n[faults 3] runs started {len(all_ids)}, unfinished at the stop {running_at_pause}; "
            f"ended {dict(statuses)} "
            f"{runs_ended_s and round(runs_ended_s, 1)} s after the database returned; "
            f"retried {sum(1 for run in runs.values() if run['attempt'] > 1)}; "
            f"stored answers per run {Counter(len(a) for a in answers.values())}; "
            f"probes while down {Counter((p.status, p.retry_after) for p in down)}; "
            f"readyz said so after {not_ready_s and round(not_ready_s, 1)} s; "
            f"first new request ok {first_ok_s and round(first_ok_s, 1)} s "
            f"after return; stream endings {dict(endings)}; exited {exited}"
        )

        assert not exited, f"processes exited: {exited}\n{running.logs()}"
        assert not_ready_s is not None, f"/readyz did not name the database: {readyz[-3:]}"
        assert down, f"no request was answered while the database was down: {probes[:5]}"
        wrong = [p for p in down if p.status != 503 or not p.retry_after]
        assert not wrong, f"answers while the database was down that were not 503 with Retry-After: {wrong[:5]}"
        assert first_ok_s is not None, f"no new request succeeded after the database returned:\n{running.logs()}"
        assert runs_ended_s is not None, f"runs not ended: { {i: r['status'] for i, r in runs.items()} }"
        assert statuses == {"succeeded": 10}, runs
        for key, run_id in ids.items():
            assert [row["content"] for row in answers[run_id]] == [texts[key]], (key, answers[run_id])
        assert not hanging, [stream.describe() for stream in hanging]
        bad = {key: stream.describe() for key, stream in streams.items() if stream.ending() is None}
        assert not bad, f"streams that ended without a terminal event and [DONE]: {bad}"
        for key, stream in streams.items():
            if stream.ending() == "finish:stop":
                assert stream.text == texts[key]


# ------------------------------------------------------------------ 4. the only worker killed, a run queued


async def test_a_run_queued_while_the_only_worker_is_dead_completes_on_a_new_worker(
    fake_llm: FakeLLM, postgres_url: str, redis_server: RedisServer
) -> None:
    async with deployed(fake_llm, postgres_url, redis_server, workers=1) as running:
        [worker] = running.workers
        await killed(worker)

        readyz: list[dict[str, Any]] = []

        async def no_workers() -> bool:
            async with httpx2.AsyncClient(base_url=running.base_url, timeout=5) as client:
                response = await client.get("/readyz")
            readyz.append({"status": response.status_code, **response.json()})
            return response.status_code == 503 and "workers" in response.json().get("missing", [])

        not_ready_s = await until(no_workers, timeout_s=LEASE_S + 10)
        assert not_ready_s is not None, f"/readyz never said the workers are gone: {readyz[-3:]}"

        key = f"orphan-{marker()}"
        text = "answered by a worker that started after the turn was accepted"
        stream = openai_stream(running, "alice", key, slow_reply(text, 0.02))
        accepted = await until(
            lambda: _has_rows(running, "SELECT 1 FROM conversations WHERE key = :key", key=key), timeout_s=15
        )
        assert accepted is not None, stream.describe()
        [run_id] = (await run_ids(running, {key: "alice"})).values()
        [queued] = (await runs_of(running, [run_id])).values()
        assert queued["status"] == "queued", queued

        running.start_worker()
        done_s = await until(lambda: ended(running, [run_id]), timeout_s=30)
        finished = await stream.finished(timeout_s=10)
        [run] = (await runs_of(running, [run_id])).values()
        answers = await answers_of(running, [run_id])
        print(
            f"\n[faults 4] readyz said no workers {not_ready_s:.1f} s after the kill; run {queued['status']} until "
            f"a new worker started; then {run['status']} (attempt {run['attempt']}) "
            f"{done_s and round(done_s, 1)} s after it was started; stream ended {stream.ending()}"
        )

        assert done_s is not None, f"the queued run never ended:\n{running.logs()}"
        assert (run["status"], run["attempt"]) == ("succeeded", 1), run
        assert [row["content"] for row in answers[run_id]] == [text]
        assert finished, stream.describe()
        assert stream.ending() == "finish:stop" and stream.text == text, stream.describe()


async def _has_rows(running: Deployment, sql: str, **params: Any) -> bool:
    return bool(await running.query(sql, **params))


# ------------------------------------------------------------------ 5. every attempt dies


async def test_a_run_whose_every_attempt_dies_fails_with_worker_lost(
    fake_llm: FakeLLM, postgres_url: str, redis_server: RedisServer
) -> None:
    async with deployed(fake_llm, postgres_url, redis_server, workers=1, SWITCHBOARD_RUN_MAX_ATTEMPTS="2") as running:
        key = f"doomed-{marker()}"
        stream = openai_stream(running, "alice", key, "[[hang]]")
        found = await until(
            lambda: _has_rows(running, "SELECT 1 FROM conversations WHERE key = :key", key=key), timeout_s=15
        )
        assert found is not None, stream.describe()
        [run_id] = (await run_ids(running, {key: "alice"})).values()

        claims: list[float] = []
        for attempt in (1, 2):
            looked_at = time.monotonic()
            holder = await holder_of(running, run_id, attempt=attempt, timeout_s=30)
            assert holder is not None, f"attempt {attempt} never started:\n{running.logs()}"
            claims.append(time.monotonic() - looked_at)
            await killed(holder)
            running.start_worker()  # the next attempt needs a worker to run on

        failed_s = await until(lambda: ended(running, [run_id]), timeout_s=30)
        finished = await stream.finished(timeout_s=10)
        [run] = (await runs_of(running, [run_id])).values()
        print(
            f"\n[faults 5] attempts started after {[round(s, 1) for s in claims]} s (each worker killed at once); "
            f"run {run['status']} / {run['error_code']} after attempt {run['attempt']}, "
            f"{failed_s and round(failed_s, 1)} s after the last kill; stream ended {stream.ending()}"
        )

        assert failed_s is not None, f"the run never ended:\n{running.logs()}"
        assert (run["status"], run["error_code"], run["attempt"]) == ("failed", "worker_lost", 2), run
        assert [row["role"] for row in await running.messages("alice", key)] == ["user"]
        assert finished, stream.describe()
        assert stream.ending() == "error:worker_lost", stream.describe()
        assert stream.text == ""


# ------------------------------------------------------------------ 6. a superseded attempt writes late


async def test_a_late_write_from_a_superseded_attempt_changes_nothing(
    fake_llm: FakeLLM, postgres_url: str, redis_server: RedisServer
) -> None:
    async with deployed(fake_llm, postgres_url, redis_server, workers=2) as running:
        key = f"superseded-{marker()}"
        text = "the answer of whichever attempt is current, stored once. " * 3
        stream = openai_stream(running, "alice", key, slow_reply(text))
        await all_started([stream], timeout_s=30)
        [run_id] = (await run_ids(running, {key: "alice"})).values()

        holder = await holder_of(running, run_id, attempt=1, timeout_s=10)
        assert holder is not None, running.logs()
        [other] = [worker for worker in running.workers if worker is not holder]
        holder.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            taken_over_s = await until(lambda: ended(running, [run_id]), timeout_s=4 * LEASE_S + 15)
            before = await runs_of(running, [run_id]), await answers_of(running, [run_id])
        finally:
            holder.send_signal(signal.SIGCONT)
        resumed_at = time.monotonic()

        async def old_attempt_finished() -> bool:
            return bool(logged(running, holder, "run.completed", run_id=run_id, attempt=1))

        # The old attempt resumes where it stopped: it reads the rest of its answer, then tries to store it.
        finished_late_s = await until(old_attempt_finished, timeout_s=20)
        after = await runs_of(running, [run_id]), await answers_of(running, [run_id])
        finished = await stream.finished(timeout_s=10)
        [run] = after[0].values()
        old_log = [
            line["event"]
            for line in log_lines(running.worker_log(holder))
            if line.get("run_id") == run_id and line.get("attempt") == 1
        ]
        print(
            f"\n[faults 6] worker stopped; attempt {run['attempt']} on the other worker ended the run "
            f"{taken_over_s and round(taken_over_s, 1)} s later; the old attempt resumed "
            f"{resumed_at - stopped_at:.1f} s after the stop; its log for the run: {old_log}; "
            f"stream ended {stream.ending()}"
        )

        assert taken_over_s is not None, f"no other attempt ended the run:\n{running.logs()}"
        assert (run["status"], run["attempt"]) == ("succeeded", 2), run
        assert logged(running, other, "run.started", run_id=run_id, attempt=2), running.worker_log(other)[-3000:]
        assert after == before, f"the superseded attempt changed the run:\nbefore {before}\nafter  {after}"
        [answer] = after[1][run_id]
        assert answer["content"] == text
        superseded = logged(running, holder, "run.superseded", run_id=run_id, attempt=1)
        late = logged(running, holder, "run.completed", run_id=run_id, attempt=1)
        assert finished_late_s is not None or superseded, f"the old attempt never finished: {old_log}\n{running.logs()}"
        assert all(line.get("stored") is False for line in late), f"the old attempt's finish was stored: {late}"
        assert finished and stream.ending() is not None, stream.describe()
        assert holder.poll() is None and other.poll() is None
