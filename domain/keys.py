"""Redis key names shared by the API and the workers. Only names live here."""

from __future__ import annotations

PREFIX = "switchboard:"
# Workers block on this list; the API pushes one token per enqueued job, so exactly one idle worker wakes.
WAKE_LIST = PREFIX + "wake"
WAKE_LIST_MAX = 1000
QUEUE_NAME = PREFIX + "queue"
# Live workers, scored by their last heartbeat (seconds since the epoch); older than this, one is gone.
WORKERS = PREFIX + "workers"
WORKER_STALE_S = 30.0
# Run ids whose owner asked to stop them; every worker listens, the one carrying the run stops it.
CANCELS = PREFIX + "cancels"


def run_channel(run_id: str) -> str:
    return f"{PREFIX}run:{run_id}:events"


def run_log(run_id: str) -> str:
    return f"{PREFIX}run:{run_id}:log"


def run_seq(run_id: str) -> str:
    return f"{PREFIX}run:{run_id}:seq"
