"""The leases of this worker's running attempts, renewed in the database, and its heartbeat.

A running attempt's lease lives in its run's row. Every third of a lease this worker renews all of its
attempts in one statement; an attempt the statement no longer finds was given to another worker (this
one was thought dead), and whatever it still writes is fenced off. The same tick reports the worker
alive in Redis, which `/readyz` reads, but only while the database answers: a worker that cannot
reach it cannot carry a run to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from domain import keys, runs
from domain.database import unavailable_on_connection_errors
from domain.errors import ServiceUnavailable

log = structlog.get_logger("switchboard.worker.leases")


class LeaseKeeper:
    def __init__(
        self, *, db_engine: AsyncEngine, redis: Redis, lease_s: float, on_cancel: Callable[[str], None]
    ) -> None:
        self._on_cancel = on_cancel
        self._db_engine = db_engine
        self._redis = redis
        self._lease_s = lease_s
        self._held: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.database_ok = True

    def hold(self, run_id: str, attempt: int) -> None:
        self._held[run_id] = attempt

    def release(self, run_id: str) -> None:
        self._held.pop(run_id, None)

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_forever(), name="lease-keeper")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError, OSError):
            await self._redis.zrem(keys.WORKERS, self.worker_id)

    async def _keep_forever(self) -> None:
        while True:
            await self._renew()
            if self.database_ok:
                await self._beat()
            await asyncio.sleep(self._lease_s / 3)

    async def _renew(self) -> None:
        held = list(self._held.items())
        try:
            async with unavailable_on_connection_errors(), self._db_engine.begin() as connection:
                renewed = await runs.renew_leases(connection, attempts=held, lease_s=self._lease_s)
        except ServiceUnavailable as exc:
            if self.database_ok:
                log.warning("worker.database_unreachable", error=str(exc.__cause__ or exc))
            self.database_ok = False
            return
        if not self.database_ok:
            log.info("worker.database_reachable")
        self.database_ok = True
        for run_id, attempt in held:
            if run_id not in renewed.current and self._held.get(run_id) == attempt:
                log.warning("run.superseded", run_id=run_id, attempt=attempt)
        for run_id in renewed.cancel_requested:
            self._on_cancel(run_id)

    async def _beat(self) -> None:
        now = time.time()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(keys.WORKERS, {self.worker_id: now})
                pipe.zremrangebyscore(keys.WORKERS, "-inf", now - keys.WORKER_STALE_S)
                await pipe.execute()
        except (RedisError, OSError):
            pass  # the dispatcher reports Redis's state; readiness goes stale by itself
