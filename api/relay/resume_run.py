"""Putting a run that waited for approval back on the queue, once its last call was decided."""

from __future__ import annotations

import structlog

from api.state import AppState
from domain.errors import ServiceUnavailable
from domain.job_codec import CHAT_JOB

log = structlog.get_logger("switchboard.api")


async def enqueue_resumed(state: AppState, run_id: str) -> None:
    """Enqueue the run's job. The run is `queued` in its row already, so a job that cannot be
    enqueued now (Redis away, or the paused attempt's job not yet cleared) is enqueued by the
    reconciler within a round: the decision stands either way."""
    try:
        queued = await state.enqueuer.enqueue(CHAT_JOB, job_id=run_id, payload={"run_id": run_id})
    except ServiceUnavailable:
        queued = False
    if not queued:
        log.info("run.resume_deferred", run_id=run_id)
