"""The benchmark run: direct, in-process and Switchboard paths against one fake LLM, one command.

    .venv/bin/python -m bench            # full run (writes bench/results.json and BENCHMARKS.md)
    .venv/bin/python -m bench --quick    # short run (writes bench/results-quick.json only)

Every server is a separate process on 127.0.0.1: the fake LLM (``python -m tests.fake_llm``), the
in-process app, a private Redis and PostgreSQL (``tests._services``), ``switchboard api`` and
``switchboard worker`` (``tests.deployment.Deployment``). The load generator (``bench.loadgen``) is
a process of its own for each cell. CPU time of every process is read from /proc before and after
each measured phase.
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
    "switchboard": "switchboard, 1 worker",
    "switchboard-2w": "switchboard, 2 workers",
}


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
    server = Server("fake-llm", [PY, "-m", "tests.fake_llm", "--port", "0"])
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
        "--prompt", opts.prompt,
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
        log(f"{target.path}: concurrency {c}, {opts.requests[c]} requests (warm-up {opts.warmup[c]})")
        cell = await loadgen(target, concurrency=c, requests=opts.requests[c], warmup=opts.warmup[c], opts=opts)
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


async def bench_inprocess(
    llm_url: str, fake: Server, opts: Options, results: list[dict[str, Any]], profile: dict[str, Any] | None
) -> None:
    from tests._services import free_port

    port = free_port()
    app = Server("inprocess", [PY, "-m", "bench.inprocess_app", "--port", str(port), "--llm-base-url", llm_url])
    try:
        await wait_http_ok(port, "/healthz", app)
        target = Target(
            "inprocess", port, "assistant", None, {"inprocess": lambda: [app.pid], "fake_llm": lambda: [fake.pid]}
        )
        await run_cells(target, opts, results)
        if profile is not None:
            profile["inprocess"] = await profile_phase(
                target, opts, {"server": app.pid}, profile["seconds"], profile["concurrency"]
            )
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


async def bench_switchboard(
    workers: int,
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
    import redis.asyncio as aioredis

    from tests.deployment import Deployment

    name = "switchboard" if workers == 1 else f"switchboard-{workers}w"
    env = {
        "SWITCHBOARD_API_KEYS": f"{API_KEY}=bench",
        "SWITCHBOARD_LOG_LEVEL": LOG_LEVEL,
        # The defaults, pinned so that a change of default does not silently change the benchmark.
        "SWITCHBOARD_WORKER_MAX_JOBS": "200",
        "SWITCHBOARD_MAX_INFLIGHT_RUNS": "1000",
        # One user sends every request here; the per-user fairness cap (default 20) is not what is measured.
        "SWITCHBOARD_MAX_ACTIVE_RUNS_PER_USER": "100000",
        "PYTHONPATH": str(ROOT),
    }
    deployment = Deployment(database=pg_url, redis_url=redis_url, llm_base_url=llm_url, env=env, workers=workers)
    redis_client = None
    log(f"{name}: starting api + {workers} worker(s) on PostgreSQL")
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

        async def redis_commands() -> dict[str, float]:
            stats = await redis_client.info("commandstats")
            calls = {f"redis {k.removeprefix('cmdstat_')}": float(v["calls"]) for k, v in stats.items()}
            calls.pop("redis info", None)  # our own probe
            calls["redis commands (all)"] = sum(calls.values())
            return calls

        target = Target(name, deployment.port, "assistant", API_KEY, meters, counters=redis_commands)
        await run_cells(target, opts, results)
        if profile is not None:
            profile[name] = await profile_phase(
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
        if any(r["errors"] or r["warmup_errors"] for r in results if r["path"] == name):
            log(f"{name}: requests failed; api and worker logs kept in {logs}")
        else:
            shutil.rmtree(logs, ignore_errors=True)


# ----------------------------------------------------------------------------- targets


def _cell(results: list[dict[str, Any]], path: str, c: int) -> dict[str, Any] | None:
    return next((r for r in results if r["path"] == path and r["concurrency"] == c), None)


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every cell against the in-process cell of the same concurrency."""
    out = []
    for cell in results:
        base = _cell(results, "inprocess", cell["concurrency"])
        if base is None or cell["path"] == "inprocess":
            continue

        def ratio(a: float | None, b: float | None) -> float | None:
            return round(a / b, 3) if a is not None and b else None

        def diff(a: float | None, b: float | None) -> float | None:
            return round(a - b, 3) if a is not None and b is not None else None

        out.append(
            {
                "path": cell["path"],
                "concurrency": cell["concurrency"],
                "added_ttft_p50_ms": diff(cell["ttft_ms"]["p50"], base["ttft_ms"]["p50"]),
                "added_ttft_p99_ms": diff(cell["ttft_ms"]["p99"], base["ttft_ms"]["p99"]),
                "added_total_p50_ms": diff(cell["total_ms"]["p50"], base["total_ms"]["p50"]),
                "ttft_p50_ratio": ratio(cell["ttft_ms"]["p50"], base["ttft_ms"]["p50"]),
                "total_p50_ratio": ratio(cell["total_ms"]["p50"], base["total_ms"]["p50"]),
                "rps_ratio": ratio(cell["rps"], base["rps"]),
            }
        )
    return out


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []

    def added_ttft(c: int, limit: float) -> None:
        sb, base = _cell(results, "switchboard", c), _cell(results, "inprocess", c)
        value = sb["ttft_ms"]["p50"] - base["ttft_ms"]["p50"] if sb and base else None
        out.append(
            {
                "target": f"added TTFT p50 at concurrency {c} <= {limit:g} ms (switchboard 1 worker - in-process)",
                "value": None if value is None else round(value, 2),
                "unit": "ms",
                "met": None if value is None else value <= limit,
            }
        )

    def rps(path: str, c: int, minimum: float | None) -> None:
        sb, base = _cell(results, path, c), _cell(results, "inprocess", c)
        value = sb["rps"] / base["rps"] if sb and base and base["rps"] else None
        label = PATHS.get(path, path)
        out.append(
            {
                "target": f"req/s at concurrency {c}: {label} / in-process"
                + (f" >= {minimum:g}x" if minimum is not None else " (reported)"),
                "value": None if value is None else round(value, 3),
                "unit": "x",
                "met": None if value is None or minimum is None else value >= minimum,
            }
        )

    added_ttft(1, 5.0)
    added_ttft(10, 10.0)
    rps("switchboard", 100, 1.0)
    rps("switchboard-2w", 100, None)
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
    parser.add_argument("--paths", default=",".join(PATHS), help=f"which paths (default {','.join(PATHS)})")
    parser.add_argument("--prompt", default="[[tokens:20]]", help="user message (default [[tokens:20]])")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, s (default 60)")
    parser.add_argument("--max-phase-s", type=float, default=300.0, help="deadline per measured phase, s")
    parser.add_argument("--settle", type=float, default=0.3, help="pause before the closing CPU snapshot, s")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="before each cell, wait up to this long for an idle machine, s (default 20, --quick 5)",
    )
    parser.add_argument("--quiet-cores", type=float, default=0.3, help="'idle' means other load below this (cores)")
    parser.add_argument("--profile", dest="profile", action="store_true", default=None, help="profile (default: on)")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--profile-seconds", type=float, default=15.0, help="py-spy recording length (default 15)")
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
        args.quiet_wait = 5.0 if args.quiet_wait is None else args.quiet_wait
    args.requests = args.requests or "200,500,1000"
    args.warmup = args.warmup or "20,50,200"
    args.quiet_wait = 20.0 if args.quiet_wait is None else args.quiet_wait
    args.profile = True if args.profile is None else args.profile
    args.report = True if args.report is None else args.report
    args.output = args.output or str(BENCH / "results.json")
    return args


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    concurrency = [int(c) for c in args.concurrency.split(",")]
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = set(paths) - set(PATHS)
    if unknown:
        raise SystemExit(f"unknown paths: {', '.join(sorted(unknown))} (known: {', '.join(PATHS)})")
    opts = Options(
        concurrency=concurrency,
        requests=_counts(args.requests, concurrency, "requests"),
        warmup=_counts(args.warmup, concurrency, "warmup"),
        prompt=args.prompt,
        timeout_s=args.timeout,
        max_phase_s=args.max_phase_s,
        settle_s=args.settle,
        quiet_wait_s=args.quiet_wait,
        quiet_cores=args.quiet_cores,
    )
    profile: dict[str, Any] | None = (
        {"seconds": args.profile_seconds, "concurrency": args.profile_concurrency} if args.profile else None
    )
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    fake, llm_url = start_fake_llm()
    llm_port = int(llm_url.rsplit(":", 1)[1].split("/", 1)[0])
    log(f"fake LLM at {llm_url} (pid {fake.pid})")
    try:
        if "direct" in paths:
            await bench_direct(llm_port, fake, opts, results)
        if "inprocess" in paths:
            await bench_inprocess(llm_url, fake, opts, results, profile)
        switchboards = [(p, 1 if p == "switchboard" else 2) for p in paths if p.startswith("switchboard")]
        if switchboards:
            async with services() as (redis_url, pg_url, meters):
                for path, workers in switchboards:
                    await bench_switchboard(
                        workers,
                        llm_url=llm_url,
                        redis_url=redis_url,
                        pg_url=pg_url,
                        fake=fake,
                        service_meters=meters,
                        opts=opts,
                        results=results,
                        profile=profile if path == "switchboard" else None,
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
            "concurrency": concurrency,
            "requests": {str(k): v for k, v in opts.requests.items()},
            "warmup": {str(k): v for k, v in opts.warmup.items()},
            "quick": bool(args.quick),
            "server_log_level": LOG_LEVEL,
            "runtime_s": round(elapsed, 1),
            "command": "python -m bench " + " ".join(sys.argv[1:]),
        },
        "results": results,
        "ratios_vs_inprocess": ratios(results),
        "targets": targets(results),
        "profile": profile_out,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = asyncio.run(amain(args))
    output = Path(args.output)
    output.write_text(json.dumps(data, indent=1) + "\n")
    log(f"results written to {output} (run took {data['meta']['runtime_s']}s)")
    from bench.report import render_results, update_benchmarks_md

    print(render_results(data))
    if args.report:
        update_benchmarks_md(ROOT / "BENCHMARKS.md", data)
        log("BENCHMARKS.md updated")
