"""Summarising py-spy ``--format raw`` (collapsed stacks) into function- and library-level shares.

    python -m bench.profile bench/profiles/switchboard-api.txt

Each line of a raw profile is ``frame;frame;...;leaf COUNT``, a frame being ``func (path:line)``.
Shares are of *active* samples: py-spy drops idle samples itself (without ``--idle``), and the few
it cannot tell are idle (thread-pool workers parked on their queue) are dropped here.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>[^()]*?)(?::(?P<line>\d+))?\)$")

# Leaves that are a parked thread, not work (py-spy's idle heuristics miss a few of these).
_IDLE_LEAVES = (
    ("_worker", "concurrent/futures/thread.py"),
    ("wait", "threading.py"),
    ("_wait_for_tstate_lock", "threading.py"),
    ("select", "selectors.py"),
)

# Frames that drive the event loop: what sits above them is start-up code, the same for every sample,
# so inclusive shares count only the frames below the deepest of them.
_LOOP_DRIVERS = (
    ("Runner.run", "asyncio/runners.py"),
    ("BaseEventLoop.run_forever", "asyncio/base_events.py"),
    ("BaseEventLoop._run_once", "asyncio/base_events.py"),
    ("Handle._run", "asyncio/events.py"),
    ("Context.run", "asyncio/events.py"),
    ("Worker.run", "arq/worker.py"),  # arq's run_until_complete (uvloop, C) is below it
)

# Libraries that are glue, not a destination: a sample is attributed to the nearest frame (from the leaf
# up) that is NOT one of these. Event-loop and context-manager machinery is charged to whoever uses it.
_GLUE = (
    "asyncio/", "contextlib.py", "typing.py", "dataclasses.py", "copy.py", "inspect.py", "functools.py",
    "anyio/", "sniffio/", "weakref.py", "_weakrefset.py", "enum.py", "abc.py", "collections/", "<frozen",
    "threading.py", "concurrent/", "types.py", "re/", "uuid.py", "secrets.py", "random.py", "<string>",
)  # fmt: skip
EVENT_LOOP = "event loop internals (uvloop/C, callbacks, no Python frame above)"

# Project packages: reported by module (api.relay.follow, workers.chat_job, ...).
_PROJECT = ("api", "domain", "workers", "todo", "demo_llm", "switchboard", "bench", "tests")

# What a library is, for people: (component label, path prefixes).
COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    ("sqlalchemy (ORM, core, asyncio adapter)", ("sqlalchemy/",)),
    ("asyncpg (PostgreSQL driver)", ("asyncpg/",)),
    ("redis-py (client, pub/sub)", ("redis/",)),
    ("arq (job runner)", ("arq/",)),
    ("pydantic-ai / pydantic-graph (agent)", ("pydantic_ai/", "pydantic_graph/", "genai_prices/")),
    ("openai SDK", ("openai/",)),
    ("httpx2 / httpcore2 (LLM HTTP client)", ("httpx2/", "httpcore2/", "h11/")),
    ("anyio / sniffio", ("anyio/", "sniffio/")),
    ("sse-starlette", ("sse_starlette/",)),
    ("starlette", ("starlette/",)),
    ("uvicorn (HTTP server)", ("uvicorn/",)),
    ("pydantic (validation, serialisation)", ("pydantic/", "pydantic_core/")),
    ("structlog / logging", ("structlog/", "logging/")),
    ("json (stdlib)", ("json/",)),
    ("asyncio (event loop, tasks, queues, locks)", ("asyncio/",)),
    ("typing / dataclasses / copy / inspect", ("typing.py", "dataclasses.py", "copy.py", "inspect.py", "enum.py")),
    ("contextlib", ("contextlib.py",)),
]


def _component_of(path: str) -> str:
    for label, prefixes in COMPONENTS:
        if path.startswith(prefixes):
            return label
    top = path.split("/", 1)[0]
    if top in _PROJECT:
        return "switchboard code (" + top + ")"
    return "other: " + top.removesuffix(".py")


def _is_driver(frame: tuple[str, str]) -> bool:
    return any(frame[0] == f and frame[1].endswith(q) for f, q in _LOOP_DRIVERS)


def _module_of(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


@dataclass
class Profile:
    name: str
    total: int = 0  # active samples
    idle: int = 0
    self_by_function: Counter[str] = field(default_factory=Counter)
    by_nearest_library: Counter[str] = field(default_factory=Counter)
    self_by_component: Counter[str] = field(default_factory=Counter)
    inclusive_by_component: Counter[str] = field(default_factory=Counter)
    inclusive_by_project_function: Counter[str] = field(default_factory=Counter)

    def share(self, n: int) -> float:
        return 100.0 * n / self.total if self.total else 0.0

    def summary(self, top: int = 15) -> dict[str, object]:
        def rows(counter: Counter[str], n: int) -> list[dict[str, object]]:
            return [{"name": k, "samples": v, "pct": round(self.share(v), 1)} for k, v in counter.most_common(n)]

        return {
            "name": self.name,
            "active_samples": self.total,
            "idle_samples_dropped": self.idle,
            "by_nearest_library": rows(self.by_nearest_library, 25),
            "self_by_component": rows(self.self_by_component, 25),
            "inclusive_by_component": rows(self.inclusive_by_component, 25),
            "self_by_function": rows(self.self_by_function, top),
            "inclusive_by_project_function": rows(self.inclusive_by_project_function, top),
        }


def parse(path: Path, name: str | None = None) -> Profile:
    profile = Profile(name=name or path.stem)
    for raw in path.read_text(errors="replace").splitlines():
        raw = raw.strip()
        if not raw:
            continue
        stack, _, count = raw.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        frames = []
        for text in stack.split(";"):
            m = _FRAME.match(text)
            frames.append((m.group("func"), m.group("path")) if m else (text, ""))
        if not frames:
            continue
        leaf_func, leaf_path = frames[-1]
        if any(leaf_func == f and leaf_path.endswith(p) for f, p in _IDLE_LEAVES):
            profile.idle += n
            continue
        profile.total += n
        start = 0
        for i, frame in enumerate(frames[:-1]):
            if _is_driver(frame):
                start = i + 1
        profile.self_by_function[f"{leaf_func} ({_module_of(leaf_path)})"] += n
        profile.self_by_component[_component_of(leaf_path)] += n
        # A driver as leaf is the loop itself (uvloop is C): no task is running, nothing to charge it to.
        task_frames = [] if _is_driver(frames[-1]) else frames[start:]
        if _is_driver(frames[-1]):
            nearest = EVENT_LOOP
        else:
            nearest = next(
                (_component_of(p) for _, p in reversed(task_frames) if p and not p.startswith(_GLUE)),
                "asyncio / anyio glue only",
            )
        profile.by_nearest_library[nearest] += n
        components = {_component_of(p) for _, p in task_frames}
        for component in components:
            profile.inclusive_by_component[component] += n
        project_functions = {f"{_module_of(p)}.{func}" for func, p in task_frames if p.split("/", 1)[0] in _PROJECT}
        for function in project_functions:
            profile.inclusive_by_project_function[function] += n
    return profile


def render(summary: dict[str, object], top: int = 12) -> str:
    """A Markdown block: where CPU is spent (self) and on whose behalf (inclusive)."""
    lines = [f"**{summary['name']}** — {summary['active_samples']} active samples"]

    def table(title: str, key: str, n: int) -> None:
        rows = summary[key]
        assert isinstance(rows, list)
        lines.append("")
        lines.append(f"| {title} | % |")
        lines.append("|---|---:|")
        for row in rows[:n]:
            lines.append(f"| {row['name']} | {row['pct']} |")

    table("CPU by library (each sample charged to the nearest non-glue frame)", "by_nearest_library", top)
    table("inclusive time by library (stack contains it)", "inclusive_by_component", top)
    table("self time by function (top)", "self_by_function", top)
    table("inclusive time by Switchboard function (own task only)", "inclusive_by_project_function", top)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    for arg in argv if argv is not None else sys.argv[1:]:
        print(render(parse(Path(arg)).summary()))
        print()


if __name__ == "__main__":
    main()
