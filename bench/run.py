"""The benchmark run: direct, in-process and Switchboard paths against one fake LLM, one command.

    .venv/bin/python -m bench            # full run (writes bench/results.json, the plots and BENCHMARKS.md)
    .venv/bin/python -m bench --quick    # short run (writes bench/results-quick.json only)

Every server is a separate process on 127.0.0.1: the fake LLM (``python -m bench.fake_llm``, the tests'
fake with one extra directive), the in-process app, a private Redis and PostgreSQL (``tests._services``),
``switchboard api`` and ``switchboard worker`` (``tests.deployment.Deployment``). The load generator
(``bench.loadgen``, or ``bench.streams`` for the open-streams and slow-reader parts) is a process of its
own for each cell. CPU time of every process is read from /proc before and after each measured phase.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import profile as profiles
from bench.procstat import SYSTEM, CpuMeter, children, system_busy_seconds

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable
LOG_LEVEL = "WARNING"
API_KEY = "key-bench"

# Paths in run order: name -> label in the report.
PATHS = {
    "direct": "direct (fake LLM)",
    "inprocess": "in-process agent",
    "inprocess-todo": "in-process todo agent",
    "switchboard": "switchboard, 1 worker",
    "switchboard-todo": "switchboard todo, 1 worker",
    "switchboard-2w": "switchboard, 2 workers",
    "switchboard-todo-2w": "switchboard todo, 2 workers",
    "streams": "1,000 open streams on one API process",
    "slow-reader": "one slow reader of an 8 MB reply",
}
# Each Switchboard path: (workers, assistant, its in-process baseline).
SWITCHBOARD_PATHS = {
    "switchboard": (1, "assistant", "inprocess"),
    "switchboard-todo": (1, "todo", "inprocess-todo"),
    "switchboard-2w": (2, "assistant", "inprocess"),
    "switchboard-todo-2w": (2, "todo", "inprocess-todo"),
}
TODO_PATHS = ("inprocess-todo", "switchboard-todo", "switchboard-todo-2w")
BASELINE = {"direct": "inprocess", **{path: base for path, (_, _, base) in SWITCHBOARD_PATHS.items()}}
# The todo assistant's prompt: the fake LLM calls list_tasks, then answers with what the tool said.
TODO_PROMPT = "[[tool:list_tasks {}]]"
# The open streams' message: a token every 5 s for 55 s, so that the first streams are still open when
# the last ones have started (a thousand runs take a while to start on two cores), with few events each.
STREAM_PROMPT = "[[tokens:12]] [[tokendelay:5]]"
QUICK_STREAM_PROMPT = "[[tokens:6]] [[tokendelay:3]]"
STREAM_WORKERS = 2


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


# ----------------------------------------------------------------------------- processes


class Server:
    """A child process that serves HTTP on 127.0.0.1; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = Path(f"/tmp/switchboard-bench-{os.getpid()}-{name}.log")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env or _base_env(), stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        with contextlib.suppress(OSError):
            self.log_path.unlink()

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


async def wait_http_ok(port: int, path: str, server: Server, timeout_s: float = 60.0) -> None:
    """Poll GET path until it answers 200 (a raw socket: no client library needed)."""
    deadline = time.monotonic() + timeout_s
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.tail()}")
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status = await reader.readline()
            writer.close()
            if b" 200 " in status:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} not ready after {timeout_s:g}s:\n{server.tail()}")
        await asyncio.sleep(0.1)


def start_fake_llm() -> tuple[Server, str]:
    server = Server("fake-llm", [PY, "-m", "bench.fake_llm", "--port", "0"])
    assert server.proc.stdout is not None
    line = server.proc.stdout.readline().decode()  # "fake-llm listening on http://127.0.0.1:PORT/v1"
    if "listening on " not in line:
        server.stop()
        raise RuntimeError(f"fake LLM did not start: {line!r}\n{server.tail()}")
    return server, line.rsplit(" ", 1)[1].strip()


# ----------------------------------------------------------------------------- cells


@dataclass
class Target:
    """Where the load generator sends requests, and which processes to meter."""

    path: str
    port: int
    model: str
    api_key: str | None
    processes: dict[str, Callable[[], Iterable[int]]] = field(default_factory=dict)
    # The user message; None: the run's --prompt.
    prompt: str | None = None
    # Cumulative counters read before and after the measured phase (e.g. Redis commands by name).
    counters: Callable[[], Awaitable[dict[str, float]]] | None = None


@dataclass
class Options:
    concurrency: list[int]
    requests: dict[int, int]
    warmup: dict[int, int]
    prompt: str
    timeout_s: float
    max_phase_s: float
    settle_s: float
    quiet_wait_s: float = 0.0
    quiet_cores: float = 0.3
    todo_prompt: str = TODO_PROMPT
    # The todo paths cost about twice as much per request (two model calls, a tool call): fewer requests.
    todo_requests: dict[int, int] = field(default_factory=dict)
    todo_warmup: dict[int, int] = field(default_factory=dict)
    streams: int = 1000
    stream_prompt: str = "[[tokens:12]] [[tokendelay:5]]"
    slow_bytes: int = 8_000_000


async def wait_quiet(opts: Options) -> float:
    """Wait (at most `quiet_wait_s`) until the machine is nearly idle between cells; the last 1 s load.

    Other work on the machine (it has few cores) distorts latency and throughput; waiting for a quiet
    moment is best effort, and each cell records the load it did see (`background_cores`).
    """
    deadline = time.monotonic() + opts.quiet_wait_s
    while True:
        busy0, t0 = system_busy_seconds(), time.monotonic()
        await asyncio.sleep(1.0)
        load = (system_busy_seconds() - busy0) / (time.monotonic() - t0)
        if load <= opts.quiet_cores or time.monotonic() >= deadline:
            if load > opts.quiet_cores and opts.quiet_wait_s > 0:
                log(f"  machine still busy ({load:.2f} cores used by other processes); measuring anyway")
            return load


async def _readline(proc: asyncio.subprocess.Process, timeout_s: float, what: str) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout_s)
    if not line:
        raise RuntimeError(f"load generator ended before {what} (exit {await proc.wait()})")
    result: dict[str, Any] = json.loads(line)
    return result


async def loadgen(
    target: Target,
    *,
    concurrency: int,
    requests: int,
    warmup: int,
    opts: Options,
    duration_s: float = 0.0,
    on_ready: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """One measured phase: warm-up, CPU snapshot, measured requests, CPU snapshot."""
    argv = [
        PY, "-m", "bench.loadgen",
        "--port", str(target.port),
        "--model", target.model,
        "--prompt", target.prompt or opts.prompt,
        "--concurrency", str(concurrency),
        "--warmup", str(warmup),
        "--requests", str(requests),
        "--timeout", str(opts.timeout_s),
        "--max-phase-s", str(opts.max_phase_s),
    ]  # fmt: skip
    if duration_s:
        argv += ["--duration", str(duration_s)]
    if target.api_key:
        argv += ["--api-key", target.api_key]
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, env=_base_env(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    bound = opts.max_phase_s + opts.timeout_s + 30
    try:
        ready = await _readline(proc, bound, "the warm-up ended")
        meter = CpuMeter({**target.processes, "loadgen": lambda: [proc.pid]})
        extra = on_ready(proc.pid) if on_ready else None
        counters_before = await target.counters() if target.counters else {}
        before = meter.snapshot()
        t_before = time.monotonic()
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        done = await _readline(proc, bound, "the measured phase ended")
        await asyncio.sleep(opts.settle_s)  # let the servers finish their bookkeeping for the last runs
        after = meter.snapshot()
        elapsed = time.monotonic() - t_before
        counters_after = await target.counters() if target.counters else {}
        proc.stdin.write(b"exit\n")
        await proc.stdin.drain()
        proc.stdin.close()
        if extra is not None:
            await extra
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    cpu = CpuMeter.delta(before, after)
    machine = cpu.pop(SYSTEM)
    counters = {k: v - counters_before.get(k, 0) for k, v in counters_after.items()}
    counters = {k: v for k, v in counters.items() if v}
    ours = sum(cpu.values())
    ok = done["ok"]
    ttft, total = done["ttft_ms"], done["total_ms"]
    errors = sum(done["errors"].values())
    return {
        "path": target.path,
        "concurrency": concurrency,
        "prompt": target.prompt or opts.prompt,
        "requests": done["requests"],
        "ok": ok,
        "errors": errors,
        "error_kinds": done["errors"],
        "warmup": warmup,
        "warmup_errors": sum(ready["warmup_errors"].values()),
        "wall_s": round(done["wall_s"], 3),
        "rps": round(ok / done["wall_s"], 2) if done["wall_s"] else None,
        "ttft_ms": _stats(ttft),
        "total_ms": _stats(total),
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "cpu_ms_per_request": {k: round(1000 * v / ok, 3) if ok else None for k, v in cpu.items()},
        "loadgen_self_cpu_s": round(done["self_cpu_s"], 3),
        # Cores' worth of CPU the whole machine used during the phase, and the part no process of ours used.
        "machine_busy_cores": round(machine / elapsed, 2),
        "background_cores": round(max(0.0, machine - ours) / elapsed, 2),
        # Processes of a group that started or ended during the phase: e.g. PostgreSQL backends, which
        # come and go when a connection pool opens and closes connections (a lower bound of the churn).
        "processes_started": {
            name: len(set(after[name]) - set(before.get(name, {})))
            for name in after
            if name != SYSTEM and set(after[name]) - set(before.get(name, {}))
        },
        "processes_ended": {
            name: len(set(before[name]) - set(after.get(name, {})))
            for name in before
            if name != SYSTEM and set(before[name]) - set(after.get(name, {}))
        },
        "counters_per_request": {k: round(v / ok, 2) for k, v in sorted(counters.items())} if ok else {},
    }


def _stats(values: list[float]) -> dict[str, float | None]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 3)

    return {
        "p50": r(percentile(values, 50)),
        "p90": r(percentile(values, 90)),
        "p99": r(percentile(values, 99)),
        "mean": r(sum(values) / len(values)) if values else None,
        "max": r(max(values)) if values else None,
    }


async def run_cells(target: Target, opts: Options, results: list[dict[str, Any]]) -> None:
    for c in opts.concurrency:
        if opts.quiet_wait_s > 0:
            await wait_quiet(opts)
        todo = target.path in TODO_PATHS
        requests = (opts.todo_requests if todo else opts.requests)[c]
        warmup = (opts.todo_warmup if todo else opts.warmup)[c]
        log(f"{target.path}: concurrency {c}, {requests} requests (warm-up {warmup})")
        cell = await loadgen(target, concurrency=c, requests=requests, warmup=warmup, opts=opts)
        results.append(cell)
        log(
            f"  ok={cell['ok']} errors={cell['errors']} rps={cell['rps']} "
            f"ttft p50={cell['ttft_ms']['p50']} p99={cell['ttft_ms']['p99']} "
            f"total p50={cell['total_ms']['p50']} p99={cell['total_ms']['p99']} cpu/req={cell['cpu_ms_per_request']} "
            f"background={cell['background_cores']} cores"
        )
        await asyncio.sleep(0.5)


# ----------------------------------------------------------------------------- profiling


def find_py_spy() -> str | None:
    candidate = Path(PY).parent / "py-spy"
    if candidate.exists():
        return str(candidate)
    return shutil.which("py-spy")


async def profile_phase(
    target: Target, opts: Options, pids: dict[str, int], seconds: float, concurrency: int
) -> dict[str, Any]:
    """Drive load at `concurrency` while py-spy records each process in `pids`; summarise."""
    py_spy = find_py_spy()
    if py_spy is None:
        log("py-spy not found: skipping the profile (install it into the venv to get one)")
        return {}
    out_dir = BENCH / "profiles"
    out_dir.mkdir(exist_ok=True)
    files = {name: out_dir / f"{target.path}-{name}-c{concurrency}.txt" for name in pids}

    def start_recording(_loadgen_pid: int) -> Any:
        async def record() -> None:
            procs = []
            for name, pid in pids.items():
                argv = [py_spy, "record", "--format", "raw", "--rate", "100", "--duration", str(int(seconds))]
                argv += ["--pid", str(pid), "-o", str(files[name])]
                procs.append(
                    await asyncio.create_subprocess_exec(
                        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
                    )
                )
            for proc in procs:
                _, err = await asyncio.wait_for(proc.communicate(), seconds + 60)
                if proc.returncode != 0:
                    log(f"py-spy failed: {err.decode(errors='replace')[-500:]}")

        return asyncio.ensure_future(record())

    log(f"profiling {target.path} at concurrency {concurrency} for {seconds:g}s: {', '.join(pids)}")
    cell = await loadgen(
        target,
        concurrency=concurrency,
        requests=100_000,
        warmup=opts.warmup.get(concurrency, concurrency),
        opts=opts,
        duration_s=seconds + 1,
        on_ready=start_recording,
    )
    summaries = {}
    for name, path in files.items():
        if path.exists():
            summaries[name] = profiles.parse(path, f"{target.path} {name}").summary(top=20)
            summaries[name]["file"] = str(path.relative_to(ROOT))
    return {"concurrency": concurrency, "seconds": seconds, "load": cell, "processes": summaries}


# ----------------------------------------------------------------------------- paths


async def bench_direct(llm_port: int, fake: Server, opts: Options, results: list[dict[str, Any]]) -> None:
    target = Target("direct", llm_port, "fake-model", None, {"fake_llm": lambda: [fake.pid]})
    await run_cells(target, opts, results)


async def create_database(pg_admin_url: str, name: str) -> str:
    """A fresh, migrated database on the private PostgreSQL (as `tests.deployment` makes them)."""
    import asyncpg

    from switchboard.migrate import upgrade

    plain = pg_admin_url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(plain)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    url = pg_admin_url.rsplit("/", 1)[0] + "/" + name
    await asyncio.to_thread(upgrade, url)
    return url


async def bench_inprocess(
    llm_url: str,
    fake: Server,
    opts: Options,
    results: list[dict[str, Any]],
    profile: dict[str, Any] | None,
    *,
    general: bool = True,
    todo_database_url: str | None = None,
    service_meters: dict[str, Callable[[], Iterable[int]]] | None = None,
) -> None:
    from tests._services import free_port

    port = free_port()
    argv = [PY, "-m", "bench.inprocess_app", "--port", str(port), "--llm-base-url", llm_url]
    if todo_database_url:
        argv += ["--todo-database-url", todo_database_url]
    app = Server("inprocess", argv)
    try:
        await wait_http_ok(port, "/healthz", app)
        meters = {"inprocess": lambda: [app.pid], "fake_llm": lambda: [fake.pid]}
        if general:
            target = Target("inprocess", port, "assistant", None, dict(meters))
            await run_cells(target, opts, results)
            if profile is not None:
                profile["inprocess"] = await profile_phase(
                    target, opts, {"server": app.pid}, profile["seconds"], profile["concurrency"]
                )
        if todo_database_url:
            # The todo baseline's tools use PostgreSQL: its CPU counts as the in-process server's.
            postgres = (service_meters or {}).get("postgres")
            todo_meters = {**meters, **({"postgres": postgres} if postgres else {})}
            target = Target("inprocess-todo", port, "todo", None, todo_meters, prompt=opts.todo_prompt)
            await run_cells(target, opts, results)
    finally:
        app.stop()


@contextlib.asynccontextmanager
async def services() -> AsyncIterator[tuple[str, str, dict[str, Callable[[], Iterable[int]]]]]:
    from tests._services import PostgresServer, RedisServer

    with RedisServer() as redis, PostgresServer() as pg:
        assert redis.proc is not None
        redis_pid = redis.proc.pid
        postmaster = int((pg.datadir / "postmaster.pid").read_text().split()[0])
        meters: dict[str, Callable[[], Iterable[int]]] = {
            "redis": lambda: [redis_pid],
            "postgres": lambda: [postmaster, *children(postmaster)],
        }
        yield redis.url, pg.url, meters


def _switchboard_env(**extra: str) -> dict[str, str]:
    return {
        "SWITCHBOARD_API_KEYS": f"{API_KEY}=bench",
        "SWITCHBOARD_LOG_LEVEL": LOG_LEVEL,
        # The defaults, pinned so that a change of default does not silently change the benchmark.
        "SWITCHBOARD_WORKER_MAX_JOBS": "200",
        "SWITCHBOARD_MAX_INFLIGHT_RUNS": "1000",
        # One user sends every request here; the per-user fairness cap (default 20) is not what is measured.
        "SWITCHBOARD_MAX_ACTIVE_RUNS_PER_USER": "100000",
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def _redis_counter(redis_client: Any) -> Callable[[], Awaitable[dict[str, float]]]:
    async def redis_commands() -> dict[str, float]:
        stats = await redis_client.info("commandstats")
        calls = {f"redis {k.removeprefix('cmdstat_')}": float(v["calls"]) for k, v in stats.items()}
        calls.pop("redis info", None)  # our own probe
        calls["redis commands (all)"] = sum(calls.values())
        return calls

    return redis_commands


async def bench_switchboard(
    workers: int,
    paths: list[str],
    *,
    llm_url: str,
    redis_url: str,
    pg_url: str,
    fake: Server,
    service_meters: dict[str, Callable[[], Iterable[int]]],
    opts: Options,
    results: list[dict[str, Any]],
    profile: dict[str, Any] | None,
) -> None:
    """One deployment with `workers` workers; the general assistant's cells, then the todo assistant's."""
    import redis.asyncio as aioredis

    from tests.deployment import Deployment

    name = "switchboard" if workers == 1 else f"switchboard-{workers}w"
    deployment = Deployment(
        database=pg_url, redis_url=redis_url, llm_base_url=llm_url, env=_switchboard_env(), workers=workers
    )
    redis_client = None
    log(f"{name}: starting api + {workers} worker(s) on PostgreSQL for {', '.join(paths)}")
    try:
        await deployment.start()
        api = deployment.api
        assert api is not None
        worker_pids = [w.pid for w in deployment.workers]
        meters: dict[str, Callable[[], Iterable[int]]] = {"api": lambda: [api.pid]}
        for i, pid in enumerate(worker_pids):
            meters[f"worker{i + 1}" if workers > 1 else "worker"] = lambda pid=pid: [pid]  # type: ignore[misc]
        meters.update({"fake_llm": lambda: [fake.pid], **service_meters})
        redis_client = aioredis.from_url(redis_url)  # type: ignore[no-untyped-call]
        counter = _redis_counter(redis_client)
        for path in paths:
            _, assistant, _ = SWITCHBOARD_PATHS[path]
            prompt = opts.todo_prompt if assistant == "todo" else None
            target = Target(path, deployment.port, assistant, API_KEY, meters, counters=counter, prompt=prompt)
            await run_cells(target, opts, results)
            if profile is not None and path == "switchboard":
                profile[path] = await profile_phase(
                    target,
                    opts,
                    {"api": api.pid, "worker": worker_pids[0]},
                    profile["seconds"],
                    profile["concurrency"],
                )
    except BaseException:
        log(f"{name} failed; deployment logs:\n{deployment.logs()}")
        raise
    finally:
        if redis_client is not None:
            await redis_client.aclose()
        await deployment.stop()
        logs = deployment._logs  # the test helper keeps its processes' logs there
        if any(r["errors"] or r["warmup_errors"] for r in results if r["path"] in paths):
            log(f"{name}: requests failed; api and worker logs kept in {logs}")
        else:
            shutil.rmtree(logs, ignore_errors=True)


# ----------------------------------------------------------------------------- open streams, slow reader


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS), in bytes; 0 if it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def nofile_limit(pid: int) -> str:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return f"{soft} / {hard}"
    return "?"


async def bench_streams(
    parts: list[str],
    *,
    llm_url: str,
    redis_url: str,
    pg_url: str,
    fake: Server,
    service_meters: dict[str, Callable[[], Iterable[int]]],
    opts: Options,
) -> dict[str, Any]:
    """One API process and one worker of their own: a slow reader, then `opts.streams` streams at once."""
    import redis.asyncio as aioredis
    from sqlalchemy import text

    from tests.deployment import Deployment

    # Every stream is a run in progress at once: the workers take them all, and admission lets them in.
    # Two workers, so that a thousand runs start sooner (the streams' memory is the API's either way).
    jobs = str(max(opts.streams + 100, 200))
    env = _switchboard_env(SWITCHBOARD_WORKER_MAX_JOBS=jobs, SWITCHBOARD_MAX_INFLIGHT_RUNS=jobs)
    deployment = Deployment(database=pg_url, redis_url=redis_url, llm_base_url=llm_url, env=env, workers=STREAM_WORKERS)
    out: dict[str, Any] = {}
    log(f"streams: starting api + {STREAM_WORKERS} workers (max jobs {jobs}) for {', '.join(parts)}")
    redis_client = None
    try:
        await deployment.start()
        api = deployment.api
        assert api is not None and deployment.engine is not None
        engine = deployment.engine
        api_pid = api.pid
        worker_pids = [w.pid for w in deployment.workers]
        meters = {"api": lambda: [api_pid], "worker": lambda: worker_pids, "fake_llm": lambda: [fake.pid]}
        meters.update(service_meters)
        redis_client = aioredis.from_url(redis_url)  # type: ignore[no-untyped-call]
        counter = _redis_counter(redis_client)
        # Warm the API up (every code path of a stream imported and cached) before its RSS is a baseline.
        warm = Target("streams-warmup", deployment.port, "assistant", API_KEY, {})
        await loadgen(warm, concurrency=10, requests=20, warmup=50, opts=opts)

        if "slow-reader" in parts:
            out["slow-reader"] = await _slow_reader(deployment.port, api_pid, engine, text, opts)
        if "streams" in parts:
            if opts.quiet_wait_s > 0:
                await wait_quiet(opts)
            out["streams"] = await _open_streams(deployment.port, api_pid, meters, counter, opts)
    except BaseException:
        log(f"streams failed; deployment logs:\n{deployment.logs()}")
        raise
    finally:
        if redis_client is not None:
            await redis_client.aclose()
        await deployment.stop()
        logs = deployment._logs
        if any(part.get("errors") for part in out.values()):
            log(f"streams: requests failed; api and worker logs kept in {logs}")
        else:
            shutil.rmtree(logs, ignore_errors=True)
    return out


async def _open_streams(
    port: int,
    api_pid: int,
    meters: dict[str, Callable[[], Iterable[int]]],
    counter: Callable[[], Awaitable[dict[str, float]]],
    opts: Options,
) -> dict[str, Any]:
    n = opts.streams
    log(f"streams: {n} streams at once on one API process, prompt {opts.stream_prompt!r}")
    argv = [
        PY, "-m", "bench.streams", "hold",
        "--port", str(port), "--model", "assistant", "--api-key", API_KEY,
        "--streams", str(n), "--prompt", opts.stream_prompt, "--warmup", "20",
        "--timeout", str(max(opts.timeout_s, 180.0)),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, env=_base_env(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdin is not None
    samples: list[dict[str, Any]] = []
    try:
        ready = await _readline(proc, 300, "its warm-up ended")
        await asyncio.sleep(1.0)  # let the warm-up's runs finish their bookkeeping
        rss_before = rss_bytes(api_pid)
        fds_before = _fd_count(api_pid)
        meter = CpuMeter({**meters, "loadgen": lambda: [proc.pid]})
        counters_before = await counter()
        before = meter.snapshot()
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        while True:
            line = await _readline(proc, 300, "the streams ended")
            if line["event"] == "done":
                done = line
                break
            line["rss"] = rss_bytes(api_pid)
            line["fds"] = _fd_count(api_pid)
            samples.append(line)
        await asyncio.sleep(opts.settle_s)
        after = meter.snapshot()
        counters_after = await counter()
        rss_after = rss_bytes(api_pid)
        proc.stdin.write(b"exit\n")
        await proc.stdin.drain()
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    max_streaming = max((s["streaming"] for s in samples), default=0)
    at_max = [s for s in samples if s["streaming"] == max_streaming] if max_streaming else []
    rss_open = max((s["rss"] for s in at_max), default=0)
    peak = max((s["rss"] for s in samples), default=0)
    errors = sum(done["errors"].values())
    ok = done["ok"]
    cpu = CpuMeter.delta(before, after)
    cpu.pop(SYSTEM)
    total = counters_after.get("redis commands (all)", 0) - counters_before.get("redis commands (all)", 0)
    delta = rss_open - rss_before
    result = {
        "streams": n,
        "workers": STREAM_WORKERS,
        "prompt": opts.stream_prompt,
        "ok": ok,
        "errors": errors,
        "error_kinds": done["errors"],
        "warmup_errors": sum(ready["warmup_errors"].values()),
        "max_open_at_once": max_streaming,
        "all_open_after_s": done["all_streaming_after_s"],
        "wall_s": round(done["wall_s"], 2),
        "loadgen_nofile": ready["nofile"],
        "api_nofile": nofile_limit(api_pid),
        "api_fds_before": fds_before,
        "api_fds_peak": max((s["fds"] for s in samples), default=0),
        "api_rss_before_mb": round(rss_before / 2**20, 1),
        "api_rss_open_mb": round(rss_open / 2**20, 1),
        "api_rss_peak_mb": round(peak / 2**20, 1),
        "api_rss_after_mb": round(rss_after / 2**20, 1),
        "rss_per_open_stream_kb": round(delta / max_streaming / 1024, 1) if max_streaming else None,
        "ttft_ms": _stats(done["ttft_ms"]),
        "total_ms": _stats(done["total_ms"]),
        "cpu_ms_per_request": {k: round(1000 * v / ok, 3) if ok else None for k, v in cpu.items()},
        "redis_commands_per_request": round(total / ok, 1) if ok else None,
        "samples": [
            {k: s[k] for k in ("t", "heads", "streaming", "finished", "errors", "rss", "fds")} for s in samples
        ],
    }
    log(
        f"  ok={ok} errors={errors} at once={max_streaming} rss {result['api_rss_before_mb']} -> "
        f"{result['api_rss_open_mb']} MiB ({result['rss_per_open_stream_kb']} KiB/stream), "
        f"fds peak {result['api_fds_peak']}"
    )
    return result


def _fd_count(pid: int) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return 0


async def _slow_reader(port: int, api_pid: int, engine: Any, text: Any, opts: Options) -> dict[str, Any]:
    size = opts.slow_bytes
    log(f"slow reader: one {size / 1e6:g} MB reply, not read until its run has ended")
    argv = [
        PY, "-m", "bench.streams", "slow", "--port", str(port), "--model", "assistant",
        "--api-key", API_KEY, "--bytes", str(size), "--timeout", "120",
    ]  # fmt: skip

    async def unfinished() -> int:
        async with engine.connect() as connection:
            row = await connection.execute(text("SELECT count(*) FROM runs WHERE status IN ('queued', 'running')"))
            return int(row.scalar_one())

    async def finished() -> int:
        async with engine.connect() as connection:
            row = await connection.execute(text("SELECT count(*) FROM runs WHERE status = 'succeeded'"))
            return int(row.scalar_one())

    await asyncio.sleep(1.0)
    done_before = await finished()
    rss_before = rss_bytes(api_pid)
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, env=_base_env(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdin is not None
    samples: list[tuple[float, int]] = []
    try:
        sent = await _readline(proc, 60, "its request was sent")
        t0 = time.monotonic()
        run_ended_s = None
        # Sample the API's RSS while nothing is read: until the run has ended (all 8 MB written to the
        # API), then 2 s more, at most 90 s.
        while time.monotonic() - t0 < 90:
            samples.append((round(time.monotonic() - t0, 2), rss_bytes(api_pid)))
            if run_ended_s is None and await finished() > done_before and await unfinished() == 0:
                run_ended_s = time.monotonic() - t0
            if run_ended_s is not None and time.monotonic() - t0 > run_ended_s + 2:
                break
            await asyncio.sleep(0.1)
        rss_unread = rss_bytes(api_pid)
        proc.stdin.write(b"read\n")
        await proc.stdin.drain()
        done = await _readline(proc, 180, "the reply was read")
        rss_after = rss_bytes(api_pid)
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    peak = max((rss for _, rss in samples), default=0)
    complete = done["status"] == 200 and done["saw_done"] and not done["error_event"] and done["content_chars"] >= size
    result = {
        "reply_bytes": size,
        "client_rcvbuf": sent["rcvbuf"],
        "run_ended_after_s": None if run_ended_s is None else round(run_ended_s, 2),
        "api_rss_before_mb": round(rss_before / 2**20, 1),
        "api_rss_peak_unread_mb": round(peak / 2**20, 1),
        "api_rss_unread_end_mb": round(rss_unread / 2**20, 1),
        "api_rss_after_read_mb": round(rss_after / 2**20, 1),
        "rss_growth_mb": round((peak - rss_before) / 2**20, 1),
        "received_bytes": done["bytes"],
        "content_chars": done["content_chars"],
        "complete": complete,
        "status": done["status"],
        "read_s": round(done["read_s"], 2),
        "errors": 0 if complete else 1,
        "samples": samples,
    }
    log(
        f"  run ended after {result['run_ended_after_s']} s; API RSS {result['api_rss_before_mb']} -> peak "
        f"{result['api_rss_peak_unread_mb']} MB unread (+{result['rss_growth_mb']} MB); read {done['bytes']} bytes, "
        f"{done['content_chars']} content chars, complete={complete}"
    )
    return result


# ----------------------------------------------------------------------------- targets


def _cell(results: list[dict[str, Any]], path: str, c: int) -> dict[str, Any] | None:
    return next((r for r in results if r["path"] == path and r["concurrency"] == c), None)


def server_cpu_ms(cell: dict[str, Any]) -> float | None:
    """CPU per request of a path's server processes: everything but the fake LLM and the load generator."""
    per = cell["cpu_ms_per_request"]
    values = [v for k, v in per.items() if k not in ("fake_llm", "loadgen") and v is not None]
    return round(sum(values), 3) if values else None


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every cell against its in-process baseline (general or todo) of the same concurrency."""
    out = []
    for cell in results:
        base_path = BASELINE.get(cell["path"])
        base = _cell(results, base_path, cell["concurrency"]) if base_path else None
        if base is None:
            continue

        def ratio(a: float | None, b: float | None) -> float | None:
            return round(a / b, 3) if a is not None and b else None

        def diff(a: float | None, b: float | None) -> float | None:
            return round(a - b, 3) if a is not None and b is not None else None

        out.append(
            {
                "path": cell["path"],
                "baseline": base_path,
                "concurrency": cell["concurrency"],
                "added_ttft_p50_ms": diff(cell["ttft_ms"]["p50"], base["ttft_ms"]["p50"]),
                "added_ttft_p99_ms": diff(cell["ttft_ms"]["p99"], base["ttft_ms"]["p99"]),
                "added_total_p50_ms": diff(cell["total_ms"]["p50"], base["total_ms"]["p50"]),
                "ttft_p50_ratio": ratio(cell["ttft_ms"]["p50"], base["ttft_ms"]["p50"]),
                "total_p50_ratio": ratio(cell["total_ms"]["p50"], base["total_ms"]["p50"]),
                "rps_ratio": ratio(cell["rps"], base["rps"]),
                "server_cpu_ratio": ratio(server_cpu_ms(cell), server_cpu_ms(base)),
            }
        )
    return out


def targets(results: list[dict[str, Any]], parts: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every target of issue 14, with its value from this run: met, missed, or n/a (not measured)."""
    out: list[dict[str, Any]] = []
    parts = parts or {}

    def add(number: int, target: str, value: float | None, unit: str, met: bool | None, detail: str = "") -> None:
        out.append(
            {
                "number": number,
                "target": target,
                "value": None if value is None else round(value, 3),
                "unit": unit,
                "met": met,
                "detail": detail,
            }
        )

    families = (
        ("switchboard", "switchboard-2w", "inprocess", False),
        ("switchboard-todo", "switchboard-todo-2w", "inprocess-todo", True),
    )
    for one, two, base_path, todo in families:
        # The todo path's targets are all number 5 ("the same targets"); the general path's are 1-3.
        for path in (one, two):
            for c in (10, 100):
                cell, base = _cell(results, path, c), _cell(results, base_path, c)
                a = server_cpu_ms(cell) if cell else None
                b = server_cpu_ms(base) if base else None
                value = a / b if a is not None and b else None
                add(
                    5 if todo else 1,
                    f"CPU per request, all server processes / in-process, c={c}, {PATHS[path]} <= 1.5x",
                    value,
                    "x",
                    None if value is None else value <= 1.5,
                    "" if value is None else f"{a:.1f} vs {b:.1f} ms",
                )
        for c, limit in ((1, 5.0), (10, 10.0)):
            cell, base = _cell(results, one, c), _cell(results, base_path, c)
            value = None
            detail = ""
            if cell and base and cell["ttft_ms"]["p50"] is not None and base["ttft_ms"]["p50"] is not None:
                value = cell["ttft_ms"]["p50"] - base["ttft_ms"]["p50"]
                detail = f"{cell['ttft_ms']['p50']:.1f} vs {base['ttft_ms']['p50']:.1f} ms"
            add(
                5 if todo else 2,
                f"added TTFT p50, c={c}, {PATHS[one]} <= {limit:g} ms",
                value,
                "ms",
                None if value is None else value <= limit,
                detail,
            )
        for path, minimum in ((one, 1.0), (two, 1.6)):
            cell, base = _cell(results, path, 100), _cell(results, base_path, 100)
            value = None
            detail = ""
            if cell and base and base["rps"] and cell["rps"] is not None:
                value = cell["rps"] / base["rps"]
                detail = f"{cell['rps']:.1f} vs {base['rps']:.1f} req/s"
            add(
                5 if todo else 2,
                f"req/s at c=100, {PATHS[path]} / in-process >= {minimum:g}x",
                value,
                "x",
                None if value is None else value >= minimum,
                detail,
            )
        for path in (one, two):
            cells = [r for r in results if r["path"] == path and r.get("counters_per_request")]
            per_c = {r["concurrency"]: r["counters_per_request"].get("redis commands (all)") for r in cells}
            per_c = {c: v for c, v in per_c.items() if v is not None}
            worst = max(per_c.values()) if per_c else None
            add(
                5 if todo else 3,
                f"Redis commands per request at every concurrency, {PATHS[path]} <= 12",
                worst,
                "cmds",
                None if worst is None else worst <= 12,
                ", ".join(f"c={c}: {v:g}" for c, v in sorted(per_c.items())),
            )

    streams = parts.get("streams")
    n = streams["streams"] if streams else 1000
    add(
        4,
        f"{n:,} streams open at once on one API process, 0 errors",
        None if streams is None else streams["errors"],
        "errors",
        None if streams is None else streams["errors"] == 0 and streams["max_open_at_once"] >= n,
        "" if streams is None else f"{streams['max_open_at_once']} open at once, {streams['ok']} ok",
    )
    add(
        4,
        "API RSS per open stream <= 64 KiB",
        None if streams is None else streams["rss_per_open_stream_kb"],
        "KiB",
        None
        if streams is None or streams["rss_per_open_stream_kb"] is None
        else streams["rss_per_open_stream_kb"] <= 64,
        ""
        if streams is None
        else f"{streams['api_rss_before_mb']} -> {streams['api_rss_open_mb']} MiB, {streams['max_open_at_once']} open",
    )
    slow = parts.get("slow-reader")
    add(
        4,
        "slow reader of an 8 MB reply: API RSS growth while unread <= 2 MiB (1 MiB buffer + 1 MiB slack), "
        "then the whole reply",
        None if slow is None else slow["rss_growth_mb"],
        "MiB",
        None if slow is None else slow["rss_growth_mb"] <= 2 and slow["complete"],
        ""
        if slow is None
        else f"{slow['api_rss_before_mb']} -> {slow['api_rss_peak_unread_mb']} MiB; whole reply read: "
        + ("yes" if slow["complete"] else f"no ({slow['content_chars']} of {slow['reply_bytes']} chars)"),
    )
    out.sort(key=lambda t: t["number"])  # stable: each number's rows keep their order
    return out


# ----------------------------------------------------------------------------- main


def _counts(text: str, concurrency: list[int], name: str) -> dict[int, int]:
    values = [int(v) for v in text.split(",")]
    if len(values) == 1:
        values *= len(concurrency)
    if len(values) != len(concurrency):
        raise SystemExit(f"--{name} needs one value, or one per concurrency level ({len(concurrency)})")
    return dict(zip(concurrency, values, strict=True))


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("pydantic-ai-slim", "openai", "httpx2", "starlette", "sse-starlette", "uvicorn", "uvloop",
                 "arq", "redis", "sqlalchemy", "asyncpg", "pydantic"):  # fmt: skip
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def _git_commit() -> str:
    """The commit the servers ran from, with `+dirty` when api/, workers/ or domain/ had local changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "api", "workers", "domain", "switchboard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, no profile, results-quick.json only")
    parser.add_argument("--concurrency", default="1,10,100", help="comma-separated levels (default 1,10,100)")
    parser.add_argument("--requests", default=None, help="measured requests per level (default 200,500,1000)")
    parser.add_argument("--warmup", default=None, help="warm-up requests per level (default 20,50,200)")
    parser.add_argument(
        "--paths",
        default=None,
        help=f"which paths and parts (default {','.join(PATHS)}; --quick leaves out the 2-worker paths)",
    )
    parser.add_argument("--prompt", default="[[tokens:20]]", help="user message (default [[tokens:20]])")
    parser.add_argument(
        "--todo-prompt", default=TODO_PROMPT, help=f"the todo paths' user message (default {TODO_PROMPT})"
    )
    parser.add_argument(
        "--todo-requests", default=None, help="the todo paths' measured requests (default half of --requests)"
    )
    parser.add_argument(
        "--todo-warmup", default=None, help="the todo paths' warm-up requests (default half of --warmup)"
    )
    parser.add_argument("--streams", type=int, default=None, help="streams opened at once (default 1000, --quick 200)")
    parser.add_argument(
        "--stream-prompt",
        default=None,
        help=f"the open streams' user message: slow, so they stay open (default {STREAM_PROMPT}; "
        f"--quick {QUICK_STREAM_PROMPT})",
    )
    parser.add_argument("--slow-bytes", type=int, default=8_000_000, help="the slow reader's reply size (default 8 MB)")
    parser.add_argument("--plots", dest="plots", action="store_true", default=None, help="draw PNG plots (default: on)")
    parser.add_argument("--no-plots", dest="plots", action="store_false")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, s (default 60)")
    parser.add_argument("--max-phase-s", type=float, default=300.0, help="deadline per measured phase, s")
    parser.add_argument("--settle", type=float, default=0.3, help="pause before the closing CPU snapshot, s")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="before each cell, wait up to this long for an idle machine, s (default 5, --quick 0)",
    )
    parser.add_argument("--quiet-cores", type=float, default=0.3, help="'idle' means other load below this (cores)")
    parser.add_argument("--profile", dest="profile", action="store_true", default=None, help="profile (default: on)")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--profile-seconds", type=float, default=10.0, help="py-spy recording length (default 10)")
    parser.add_argument("--profile-concurrency", type=int, default=100)
    parser.add_argument("--output", default=None, help="results JSON (default bench/results.json)")
    parser.add_argument("--report", dest="report", action="store_true", default=None, help="update BENCHMARKS.md")
    parser.add_argument("--no-report", dest="report", action="store_false")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests = args.requests or "50,100,200"
        args.warmup = args.warmup or "10,20,100"
        args.profile = bool(args.profile)
        args.report = bool(args.report)
        args.output = args.output or str(BENCH / "results-quick.json")
        args.quiet_wait = 0.0 if args.quiet_wait is None else args.quiet_wait
        args.streams = args.streams or 200
        args.stream_prompt = args.stream_prompt or QUICK_STREAM_PROMPT
        args.paths = args.paths or ",".join(p for p in PATHS if not p.endswith("2w"))
        args.plots = bool(args.plots)
    args.requests = args.requests or "200,500,1000"
    args.warmup = args.warmup or "20,50,200"
    args.quiet_wait = 5.0 if args.quiet_wait is None else args.quiet_wait
    args.paths = args.paths or ",".join(PATHS)
    args.profile = True if args.profile is None else args.profile
    args.report = True if args.report is None else args.report
    args.plots = True if args.plots is None else args.plots
    args.streams = args.streams or 1000
    args.stream_prompt = args.stream_prompt or STREAM_PROMPT
    args.output = args.output or str(BENCH / "results.json")
    return args


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    concurrency = [int(c) for c in args.concurrency.split(",")]
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = set(paths) - set(PATHS)
    if unknown:
        raise SystemExit(f"unknown paths: {', '.join(sorted(unknown))} (known: {', '.join(PATHS)})")
    requests = _counts(args.requests, concurrency, "requests")
    warmup = _counts(args.warmup, concurrency, "warmup")
    opts = Options(
        concurrency=concurrency,
        requests=requests,
        warmup=warmup,
        prompt=args.prompt,
        timeout_s=args.timeout,
        max_phase_s=args.max_phase_s,
        settle_s=args.settle,
        quiet_wait_s=args.quiet_wait,
        quiet_cores=args.quiet_cores,
        todo_prompt=args.todo_prompt,
        todo_requests=_counts(args.todo_requests, concurrency, "todo-requests")
        if args.todo_requests
        else {c: max(1, n // 2) for c, n in requests.items()},
        todo_warmup=_counts(args.todo_warmup, concurrency, "todo-warmup")
        if args.todo_warmup
        else {c: max(1, n // 2) for c, n in warmup.items()},
        streams=args.streams,
        stream_prompt=args.stream_prompt,
        slow_bytes=args.slow_bytes,
    )
    profile: dict[str, Any] | None = (
        {"seconds": args.profile_seconds, "concurrency": args.profile_concurrency} if args.profile else None
    )
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    fake, llm_url = start_fake_llm()
    llm_port = int(llm_url.rsplit(":", 1)[1].split("/", 1)[0])
    log(f"fake LLM at {llm_url} (pid {fake.pid})")
    parts: dict[str, Any] = {}
    try:
        if "direct" in paths:
            await bench_direct(llm_port, fake, opts, results)
        if "inprocess" in paths and "inprocess-todo" not in paths:
            await bench_inprocess(llm_url, fake, opts, results, profile)
        needs_services = [p for p in paths if p not in ("direct", "inprocess")]
        if needs_services:
            async with services() as (redis_url, pg_url, meters):
                if "inprocess-todo" in paths:
                    todo_db = await create_database(pg_url, f"bench_inprocess_{os.getpid()}")
                    await bench_inprocess(
                        llm_url,
                        fake,
                        opts,
                        results,
                        profile,
                        general="inprocess" in paths,
                        todo_database_url=todo_db,
                        service_meters=meters,
                    )
                for workers in (1, 2):
                    chosen = [p for p, (w, _, _) in SWITCHBOARD_PATHS.items() if w == workers and p in paths]
                    if chosen:
                        await bench_switchboard(
                            workers,
                            chosen,
                            llm_url=llm_url,
                            redis_url=redis_url,
                            pg_url=pg_url,
                            fake=fake,
                            service_meters=meters,
                            opts=opts,
                            results=results,
                            profile=profile if workers == 1 else None,
                        )
                chosen_parts = [p for p in ("slow-reader", "streams") if p in paths]
                if chosen_parts:
                    parts = await bench_streams(
                        chosen_parts,
                        llm_url=llm_url,
                        redis_url=redis_url,
                        pg_url=pg_url,
                        fake=fake,
                        service_meters=meters,
                        opts=opts,
                    )
    finally:
        fake.stop()
    elapsed = time.monotonic() - started
    profile_out = {k: v for k, v in (profile or {}).items() if isinstance(v, dict)}
    return {
        "meta": {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "git_commit": _git_commit(),
            "cores": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "platform": platform.platform(),
            "versions": _versions(),
            "prompt": opts.prompt,
            "todo_prompt": opts.todo_prompt,
            "concurrency": concurrency,
            "requests": {str(k): v for k, v in opts.requests.items()},
            "warmup": {str(k): v for k, v in opts.warmup.items()},
            "todo_requests": {str(k): v for k, v in opts.todo_requests.items()},
            "todo_warmup": {str(k): v for k, v in opts.todo_warmup.items()},
            "quick": bool(args.quick),
            "server_log_level": LOG_LEVEL,
            "runtime_s": round(elapsed, 1),
            "command": "python -m bench " + " ".join(sys.argv[1:]),
        },
        "results": results,
        "parts": parts,
        "ratios_vs_inprocess": ratios(results),
        "targets": targets(results, parts),
        "profile": profile_out,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Every server of the run inherits this: 1,000 open streams need more than the common 1,024 files.
    from bench.streams import raise_nofile

    nofile = raise_nofile()
    log(f"open files limit (soft / hard), inherited by every server: {nofile[0]} / {nofile[1]}")
    data = asyncio.run(amain(args))
    data["meta"]["nofile"] = list(nofile)
    output = Path(args.output)
    if args.plots:
        from bench.plots import draw

        data["plots"] = draw(data, BENCH / "plots")
    output.write_text(json.dumps(data, indent=1) + "\n")
    log(f"results written to {output} (run took {data['meta']['runtime_s']}s)")
    from bench.report import render_results, update_benchmarks_md

    print(render_results(data))
    if args.report:
        update_benchmarks_md(ROOT / "BENCHMARKS.md", data)
        log("BENCHMARKS.md updated")
