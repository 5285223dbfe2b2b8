"""Stopping runs, the same way from every surface: recorded in the run's row first, then delivered.

A queued run is cancelled at once and never starts; its listeners are told through its event log. A
running one is announced to the workers, and the one carrying it stops it and stores what it said
(workers/cancels.py); should the announcement be lost, the worker reads the request from the row at
its next lease renewal, and should that worker be gone, the reconciler cancels the run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import Row

from api.state import AppState
from domain import keys, runs
from domain.database import unavailable_on_connection_errors
from domain.events import RunCancelled
from domain.models import FINISHED

POLL_S = 0.05


async def cancel_run(state: AppState, *, user_id: str, run_id: str) -> Row[Any] | None:
    """The run after the request, or None when it is not this user's. Idempotent."""
    async with unavailable_on_connection_errors(), state.db_engine.begin() as connection:
        run = await runs.request_cancel(connection, run_id=run_id, user_id=user_id)
    if run is not None:
        await deliver_cancels(state, [run])
    return run


async def cancel_removed_runs(state: AppState, removed: Sequence[tuple[str, int]]) -> None:
    """Stop runs whose rows were just deleted (a deleted conversation's), given as (id, attempt): their
    workers stop them, and their listeners hear that they ended."""
    with contextlib.suppress(RedisError, OSError):
        for run_id, _ in removed:
            await state.redis.publish(keys.CANCELS, run_id)
        ended = [RunCancelled(run_id=run_id, attempt=attempt) for run_id, attempt in removed]
        if ended:
            await state.event_log.publish_many(ended)


async def wait_until_finished(state: AppState, run_id: str, *, timeout_s: float) -> Row[Any] | None:
    """The run once it has ended, or as it stands when `timeout_s` has passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        async with unavailable_on_connection_errors(), state.db_engine.connect() as connection:
            run = await runs.load(connection, run_id)
        if run is None or run.status in FINISHED or loop.time() >= deadline:
            return run
        await asyncio.sleep(POLL_S)


async def deliver_cancels(state: AppState, rows: Sequence[Row[Any]]) -> None:
    """Tell whoever must know that these runs (rows from `runs.request_cancel`) were asked to stop."""
    try:
        for run in rows:
            if run.status == "running":
                await state.redis.publish(keys.CANCELS, run.id)
            elif run.status == "cancelled" and run.attempt == 0:
                # It never started, so no worker will say it ended: its listeners hear it from here.
                await state.event_log.publish_many([RunCancelled(run_id=run.id, attempt=0)])
    except (RedisError, OSError):
        pass  # the request is recorded; workers and listeners read it from the database
