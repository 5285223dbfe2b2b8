"""Carrying every accepted run to an end, whatever failed: the reconciler.

Every worker runs one; in each round one of them acts (it holds a PostgreSQL advisory lock for the
round; on SQLite, one machine, every action is safe to repeat). A round:

- fails runs older than the run timeout plus a grace with `run_timeout`, whatever carries them;
- gives a running run whose lease lapsed (its worker is gone) a new attempt by queueing it again,
  or fails it with `worker_lost` once it has had `SWITCHBOARD_RUN_MAX_ATTEMPTS`;
- queues again a queued run whose job is not in Redis (Redis restarted empty, or an enqueue failed
  after the turn was committed).

A job's id is its run's id, so queueing again can never make a run run twice at once; and every
write an attempt makes is fenced by its attempt number. Terminal events are published so that every
listener ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

import structlog
from arq.constants import job_key_prefix
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from domain import approvals, run_recovery, runs
from domain.database import unavailable_on_connection_errors
from domain.errors import RunFailureCode, ServiceUnavailable
from domain.events import RunCancelled
from domain.run_recovery import Unfinished
from workers.context import WorkerDeps
from workers.requeue import requeue

log = structlog.get_logger("switchboard.worker.reconciler")

# A queued run younger than this may still be on its way into Redis: the API commits, then enqueues.
ENQUEUE_GRACE_S = 5.0
# Any number that no other advisory lock of this database uses.
ADVISORY_LOCK_KEY = 0x5B0A2D


class Reconciler:
    def __init__(self, deps: WorkerDeps) -> None:
        self._deps = deps
        self._arq = deps.queue
        self._metrics = deps.metrics
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._reconcile_forever(), name="reconciler")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self._deps.settings.reconcile_interval_s)
            try:
                await self.reconcile_once()
                await self._count_pending_approvals()
            except (ServiceUnavailable, RedisError, OSError) as exc:
                # The worker reports its dependencies' state; the next round tries again.
                dependency = "database" if isinstance(exc, ServiceUnavailable) else "redis"
                self._metrics.dependency_errors.labels(dependency).inc()
                log.debug("reconciler.skipped", error=str(exc))

    async def _count_pending_approvals(self) -> None:
        # Every worker counts, not only the one whose turn it is: each one's gauge stays current.
        async with unavailable_on_connection_errors(), self._deps.db_engine.connect() as connection:
            self._metrics.approvals_pending.set(await approvals.count_pending(connection))

    async def reconcile_once(self) -> None:
        settings = self._deps.settings
        async with unavailable_on_connection_errors(), self._deps.db_engine.begin() as connection:
            if not await _take_turn(connection):
                return
            overdue = await run_recovery.overdue(connection, age_s=settings.run_timeout_s + settings.relay_grace_s)
            for run in overdue:
                message = f"the run did not finish within {settings.run_timeout_s:g} s"
                if await self._fail(connection, run, "run_timeout", message):
                    self._metrics.reconciler_actions.labels("timed_out").inc()
            lapsed = []
            for run in await run_recovery.lapsed(connection):
                # Its owner asked it to stop and its worker is gone: it stops here, not on a new attempt.
                if await runs.cancel_abandoned(connection, run_id=run.id, attempt=run.attempt):
                    self._metrics.reconciler_actions.labels("cancelled").inc()
                    await self._announce(connection, run)
                else:
                    lapsed.append(run)
            exhausted = [run for run in lapsed if run.attempts_used >= settings.run_max_attempts]
            for run in exhausted:
                if await self._fail(connection, run, "worker_lost", runs.WORKER_LOST):
                    self._metrics.reconciler_actions.labels("worker_lost").inc()
            retry = [run for run in lapsed if run.attempts_used < settings.run_max_attempts]
            stale = await run_recovery.queued_before(connection, age_s=ENQUEUE_GRACE_S)
            for run_id, attempt in await approvals.expire_due(connection):
                log.info("reconciler.approval_expired", run_id=run_id)
                self._metrics.reconciler_actions.labels("approval_expired").inc()
                self._deps.events.send(RunCancelled(run_id=run_id, attempt=attempt), urgent=True)
        await self._requeue(retry, action="retried")
        await self._requeue(await self._missing_jobs(stale), action="requeued")

    async def _fail(self, connection: AsyncConnection, run: Unfinished, code: RunFailureCode, message: str) -> bool:
        if not await runs.fail(connection, run_id=run.id, attempt=run.attempt, code=code, message=message):
            return False
        await self._announce(connection, run)
        return True

    async def _announce(self, connection: AsyncConnection, run: Unfinished) -> None:
        row = await runs.load(connection, run.id)
        if row is not None:
            log.warning("reconciler.ended_run", run_id=run.id, attempt=run.attempt, status=row.status)
            self._deps.events.send(runs.outcome_event(row), urgent=True)

    async def _missing_jobs(self, runs_: list[Unfinished]) -> list[Unfinished]:
        if not runs_:
            return []
        async with self._arq.pipeline(transaction=False) as pipe:
            for run in runs_:
                pipe.exists(job_key_prefix + run.id)
            found = await pipe.execute()
        return [run for run, exists in zip(runs_, found, strict=True) if not exists]

    async def _requeue(self, runs_: list[Unfinished], *, action: Literal["retried", "requeued"]) -> None:
        for run in runs_:
            if await requeue(self._arq, run.id):
                self._metrics.reconciler_actions.labels(action).inc()
                log.warning(f"reconciler.{action}_run", run_id=run.id, attempt=run.attempt, status=run.status)


async def _take_turn(connection: AsyncConnection) -> bool:
    """Whether this worker acts this round: it holds the advisory lock until its transaction ends."""
    if connection.dialect.name != "postgresql":
        return True
    result = await connection.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    return bool(result.scalar())
