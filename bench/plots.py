"""PNG plots of a run, drawn with matplotlib (the ``bench`` extra: ``uv pip install -e '.[bench]'``).

    python -m bench.plots bench/results.json     # draw again from a results file

``draw`` writes ``targets.png``, ``rps.png``, ``ttft.png``, ``cpu.png`` and ``streams.png`` (when the
run has the data for them) and returns their paths relative to the repository root; without
matplotlib it draws nothing, says so once, and returns an empty list.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

FAMILIES = [
    ("general assistant (PydanticAI, [[tokens:20]])", ["inprocess", "switchboard", "switchboard-2w"]),
    ("todo assistant (Agents SDK + MCP tool)", ["inprocess-todo", "switchboard-todo", "switchboard-todo-2w"]),
]
LABELS = {
    "direct": "direct (fake LLM)",
    "inprocess": "in-process",
    "inprocess-todo": "in-process todo",
    "switchboard": "switchboard 1w",
    "switchboard-2w": "switchboard 2w",
    "switchboard-todo": "switchboard todo 1w",
    "switchboard-todo-2w": "switchboard todo 2w",
}
COLORS = {
    "inprocess": "#4c72b0",
    "inprocess-todo": "#4c72b0",
    "switchboard": "#dd8452",
    "switchboard-todo": "#dd8452",
    "switchboard-2w": "#c44e52",
    "switchboard-todo-2w": "#c44e52",
}
# Processes in the stacked CPU bars, bottom up.
PROCESSES = [
    ("inprocess", "in-process server", "#4c72b0"),
    ("api", "API", "#55a868"),
    ("worker", "worker", "#dd8452"),
    ("worker1", "worker 1", "#dd8452"),
    ("worker2", "worker 2", "#e6a57a"),
    ("redis", "Redis", "#c44e52"),
    ("postgres", "PostgreSQL", "#8172b3"),
    ("fake_llm", "fake LLM (not a server)", "#cccccc"),
]


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw(data: dict[str, Any], out_dir: Path) -> list[str]:
    plt = _matplotlib()
    if plt is None:
        print(
            "[bench] matplotlib is not installed: no plots (uv pip install -e '.[bench]' provides it)",
            file=sys.stderr,
            flush=True,
        )
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fn in (
        ("targets", _targets),
        ("rps", _rps),
        ("ttft", _ttft),
        ("cpu", _cpu),
        ("streams", _streams),
    ):
        path = out_dir / f"{name}.png"
        fig = fn(plt, data)
        if fig is None:
            path.unlink(missing_ok=True)  # no data for it in this run: no stale picture either
            continue
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path))
    return written


def _cells(data: dict[str, Any], path: str) -> list[dict[str, Any]]:
    return sorted((r for r in data["results"] if r["path"] == path), key=lambda r: r["concurrency"])


def _families(data: dict[str, Any]) -> list[tuple[str, list[str]]]:
    present = {r["path"] for r in data["results"]}
    out = []
    for title, paths in FAMILIES:
        chosen = [p for p in paths if p in present]
        if chosen:
            out.append((title, chosen))
    return out


def _title(data: dict[str, Any], what: str) -> str:
    meta = data["meta"]
    return f"{what} — run of {meta['date'][:16].replace('T', ' ')} UTC, commit {meta.get('git_commit', '?')}"


def _rps(plt: Any, data: dict[str, Any]) -> Any:
    families = _families(data)
    if not families:
        return None
    fig, axes = plt.subplots(1, len(families), figsize=(6.5 * len(families), 4.2), squeeze=False)
    for ax, (title, paths) in zip(axes[0], families, strict=True):
        levels = sorted({r["concurrency"] for p in paths for r in _cells(data, p)})
        width = 0.8 / len(paths)
        base = {r["concurrency"]: r["rps"] or 0 for r in _cells(data, paths[0])} if "inprocess" in paths[0] else {}
        for i, path in enumerate(paths):
            by_c = {r["concurrency"]: r["rps"] or 0 for r in _cells(data, path)}
            xs = [j + (i - (len(paths) - 1) / 2) * width for j in range(len(levels))]
            bars = ax.bar(xs, [by_c.get(c, 0) for c in levels], width, label=LABELS[path], color=COLORS[path])
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
            # The targets at c=100: 1 worker >= 1.0x in-process, 2 workers >= 1.6x.
            goal = 1.6 if path.endswith("2w") else 1.0 if path.startswith("switchboard") else None
            if goal is not None and 100 in levels and base.get(100):
                x = xs[levels.index(100)]
                ax.hlines(goal * base[100], x - width / 2, x + width / 2, colors="black", linestyles="--")
        if base.get(100):
            ax.plot([], [], "k--", label="target at c=100 (1.0× / 1.6× in-process)")
        ax.set_xticks(range(len(levels)), [f"c={c}" for c in levels])
        ax.set_ylabel("requests per second")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(_title(data, "Requests per second (higher is better)"), fontsize=10)
    fig.tight_layout()
    return fig


def _ttft(plt: Any, data: dict[str, Any]) -> Any:
    families = _families(data)
    if not families:
        return None
    fig, axes = plt.subplots(1, len(families), figsize=(6.5 * len(families), 4.2), squeeze=False)
    for ax, (title, paths) in zip(axes[0], families, strict=True):
        for path in paths:
            cells = [r for r in _cells(data, path) if r["ttft_ms"]["p50"] is not None]
            cs = [r["concurrency"] for r in cells]
            color = COLORS[path]
            style = "-" if not path.endswith("2w") else "-."
            ax.plot(cs, [r["ttft_ms"]["p50"] for r in cells], style, marker="o", color=color,
                    label=f"{LABELS[path]} p50")  # fmt: skip
            ax.plot(cs, [r["ttft_ms"]["p99"] for r in cells], ":", marker="x", color=color,
                    label=f"{LABELS[path]} p99")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        levels = sorted({r["concurrency"] for p in paths for r in _cells(data, p)})
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrency")
        ax.set_ylabel("time to first token, ms (log)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(_title(data, "Time to first token, p50 and p99 (lower is better)"), fontsize=10)
    fig.tight_layout()
    return fig


def _cpu(plt: Any, data: dict[str, Any]) -> Any:
    families = _families(data)
    if not families:
        return None
    fig, axes = plt.subplots(1, len(families), figsize=(6.5 * len(families), 4.6), squeeze=False)
    for ax, (title, paths) in zip(axes[0], families, strict=True):
        cells = [r for p in paths for r in _cells(data, p)]
        xs = list(range(len(cells)))
        bottom = [0.0] * len(cells)
        for key, label, color in PROCESSES:
            values = [r["cpu_ms_per_request"].get(key) or 0.0 for r in cells]
            if not any(values):
                continue
            ax.bar(xs, values, 0.7, bottom=bottom, label=label, color=color, edgecolor="white", linewidth=0.5)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        for x, total in zip(xs, bottom, strict=True):
            ax.text(x, total, f"{total:.0f}", ha="center", va="bottom", fontsize=7)
        # The target at c=10 and c=100: all server processes <= 1.5x the in-process server's.
        base = {r["concurrency"]: _servers(r) for r in _cells(data, paths[0])} if "inprocess" in paths[0] else {}
        marked = False
        for x, r in zip(xs, cells, strict=True):
            if r["path"].startswith("switchboard") and r["concurrency"] in (10, 100) and base.get(r["concurrency"]):
                ax.hlines(1.5 * base[r["concurrency"]], x - 0.35, x + 0.35, colors="black", linestyles="--")
                marked = True
        if marked:
            ax.plot([], [], "k--", label="target: servers (no fake LLM)\n<= 1.5x in-process, c=10, 100")
        ax.set_xticks(xs, [f"{LABELS[r['path']]}\nc={r['concurrency']}" for r in cells], fontsize=6.5, rotation=60)
        ax.set_ylabel("CPU ms per request")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(_title(data, "CPU time per request by process (lower is better)"), fontsize=10)
    fig.tight_layout()
    return fig


def _servers(cell: dict[str, Any]) -> float:
    return sum(v or 0.0 for k, v in cell["cpu_ms_per_request"].items() if k not in ("fake_llm", "loadgen"))


def _target_score(t: dict[str, Any]) -> float | None:
    """The value as a multiple of its limit, where > 1 is missed (for >= targets, the limit over the value)."""
    value = t["value"]
    if value is None:
        return None
    limit = _limit(t["target"])
    if limit is None:
        return None
    if ">=" in t["target"]:
        return limit / value if value else float("inf")
    if limit == 0:
        return 0.0 if value == 0 else 1.0 + value
    return value / limit


def _limit(text: str) -> float | None:
    import re

    m = re.search(r"(<=|>=) ?([0-9.]+)", text)
    if m:
        return float(m.group(2))
    if "0 errors" in text:
        return 0.0
    return None


def _targets(plt: Any, data: dict[str, Any]) -> Any:
    rows = [t for t in data.get("targets") or () if t["met"] is not None]
    if not rows:
        return None
    rows = list(reversed(rows))  # first target on top
    fig, ax = plt.subplots(figsize=(11, 0.34 * len(rows) + 1.4))
    scores = [_target_score(t) for t in rows]
    shown = [max(0.0, min(s, 6.0)) if s is not None else 0 for s in scores]  # a negative added TTFT: 0
    colors = ["#55a868" if t["met"] else "#c44e52" for t in rows]
    ys = list(range(len(rows)))
    ax.barh(ys, shown, color=colors, height=0.65)
    ax.axvline(1.0, color="black", linewidth=1)
    for y, t, s in zip(ys, rows, shown, strict=True):
        unit = {"ms": " ms", "x": "×", "KiB": " KiB", "MiB": " MiB"}.get(t["unit"], "")
        value = f"{t['value']:.2f}{unit}" if t["unit"] in ("ms", "x") else f"{t['value']:g}{unit}"
        ax.text(s + 0.05, y, f"{value}  {'met' if t['met'] else 'missed'}", va="center", fontsize=7.5)
    ax.set_yticks(ys, [f"{t['number']}. {t['target']}" for t in rows], fontsize=7.5)
    ax.set_xlim(0, 7.2)
    ax.set_xlabel("value / target (≥ targets: target / value); at most 1 is met; bars cut at 6")
    ax.set_title(_title(data, "Issue 14 targets"), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _streams(plt: Any, data: dict[str, Any]) -> Any:
    streams = (data.get("parts") or {}).get("streams")
    slow = (data.get("parts") or {}).get("slow-reader")
    if not streams and not slow:
        return None
    panels = [p for p in (streams, slow) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4), squeeze=False)
    i = 0
    if streams:
        ax = axes[0][i]
        i += 1
        samples = streams["samples"]
        ts = [s["t"] for s in samples]
        ax.plot(ts, [s["streaming"] for s in samples], color="#4c72b0", label="open streams (had content, not ended)")
        ax.plot(ts, [s["heads"] - s["finished"] for s in samples], ":", color="#4c72b0",
                label="responses started, not ended")  # fmt: skip
        ax.set_xlabel("seconds since the requests were sent")
        ax.set_ylabel("streams")
        ax2 = ax.twinx()
        ax2.plot(ts, [s["rss"] / 2**20 for s in samples], color="#c44e52", label="API RSS, MiB")
        ax2.axhline(streams["api_rss_before_mb"], color="#c44e52", linestyle="--", linewidth=0.8)
        ax2.set_ylabel("API RSS, MiB", color="#c44e52")
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="lower center")
        ax.set_title(
            f"{streams['streams']:,} streams at once: {streams['rss_per_open_stream_kb']} KiB of API RSS per open "
            f"stream, {streams['errors']} errors",
            fontsize=9,
        )
        ax.grid(alpha=0.3)
    if slow:
        ax = axes[0][i]
        samples = slow["samples"]
        ax.plot([t for t, _ in samples], [rss / 2**20 for _, rss in samples], color="#c44e52")
        ax.axhline(slow["api_rss_before_mb"], color="#c44e52", linestyle="--", linewidth=0.8, label="before")
        ax.axhline(slow["api_rss_before_mb"] + 1, color="black", linestyle=":", linewidth=0.8, label="before + 1 MiB")
        if slow.get("run_ended_after_s") is not None:
            ax.axvline(slow["run_ended_after_s"], color="grey", linewidth=0.8, label="run ended")
        ax.set_xlabel("seconds since the request was sent (nothing read)")
        ax.set_ylabel("API RSS, MiB")
        ax.set_title(
            f"One slow reader of a {slow['reply_bytes'] / 1e6:g} MB reply: API RSS +{slow['rss_growth_mb']} MiB",
            fontsize=9,
        )
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(_title(data, "Open streams and a slow reader, one API process"), fontsize=10)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    import json

    args = argv if argv is not None else sys.argv[1:]
    source = Path(args[0]) if args else ROOT / "bench" / "results.json"
    data = json.loads(source.read_text())
    for path in draw(data, ROOT / "bench" / "plots"):
        print(path)


if __name__ == "__main__":
    main()
