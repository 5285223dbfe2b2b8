"""Putting a run back on the queue, by its id, from a worker (the reconciler, or a finished turn)."""

from __future__ import annotations

from typing import Any

from domain import keys
from domain.job_codec import CHAT_JOB


async def requeue(queue: Any, run_id: str) -> bool:
    """Queue the run's job and wake a worker; False when its job is queued already.

    `queue` is arq's pool (`ArqRedis`). The job's id is the run's, so a run is never queued twice.
    """
    job = await queue.enqueue_job(CHAT_JOB, {"run_id": run_id}, _job_id=run_id, _queue_name=keys.QUEUE_NAME)
    if job is None:
        return False
    await queue.rpush(keys.WAKE_LIST, run_id)
    return True
