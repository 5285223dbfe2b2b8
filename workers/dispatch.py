"""An arq worker that starts jobs as soon as they are enqueued, and outlives Redis going away.

arq's `Worker.main` sleeps `poll_delay` between looks at the queue, which adds up to that much before
a job starts. Here an idle worker blocks on a Redis list instead; the API pushes one token per job, and
Redis hands each token to exactly one blocked worker, so one job wakes one worker. arq's own poll
still runs on a clock, whatever the load, for jobs without a token (retries, jobs the reconciler
queued again, tokens trimmed or taken by a full worker); it also writes arq's health-check key.

When Redis cannot be reached the worker says so once, stops taking work, retries with backoff and
carries on by itself when Redis is back: it never exits because a dependency went away.

This overrides arq internals (`main`, `start_jobs` and the `run_job` it starts, `_sleep_until_tasks_complete`,
`_release_sem_dec_counter_on_complete`), so arq is pinned to the exact version it was written against.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from arq.connections import create_pool
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.jobs import SerializationError, deserialize_job_raw
from arq.utils import ms_to_datetime
from arq.worker import Worker
from redis.asyncio import Redis
from redis.exceptions import RedisError

from domain import keys

log = structlog.get_logger("switchboard.worker.dispatch")

# KEYS: in-progress key, job key, queue. ARGV: lease ms, job id. Returns the job if claimed.
# A job whose key is gone (it finished, or expired) is taken off the queue, as arq does. Nothing here
# is ever deferred (every enqueue is due at once), so the job's score in the queue is not checked.
_CLAIM_SCRIPT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  return false
end
local job = redis.call('GET', KEYS[2])
if not job then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[3], ARGV[2])
  return false
end
return job
"""

MAX_BACKOFF_S = 5.0


class WakeableWorker(Worker):
    def __init__(
        self,
        *args: Any,
        wake_redis_url: str,
        lease_s: float,
        before_connect: Callable[[], Awaitable[None]] | None = None,
        **kwargs: Any,
    ) -> None:
        # Our own loop retries a lost Redis for as long as it takes; arq's start-up retries would give up.
        kwargs["redis_settings"] = dataclasses.replace(kwargs["redis_settings"], conn_retries=0)
        super().__init__(*args, **kwargs)
        self._wake_redis_url = wake_redis_url
        # Awaited first thing in the main task, where arq's signal handlers can cancel it (see workers/startup.py).
        self._before_connect = before_connect
        self._slot_freed = asyncio.Event()
        # arq marks a running job with a key that lives for the job timeout plus 10 s, so a job whose
        # worker died is retried only after that, minutes later. A short lease, renewed while the job
        # runs, lets another worker retry it within seconds of the death.
        self.in_progress_timeout_s = lease_s
        self._lease_s = lease_s
        self._redis_ok = True
        # Set by the worker's start-up: whether its other dependencies let it take work now.
        self.ready_to_claim: Callable[[], bool] = lambda: True

    async def main(self) -> None:
        # Blocking pops need a connection of their own: on the shared pool one would stall every other
        # command queued behind it.
        wake = Redis.from_url(self._wake_redis_url, socket_timeout=None, socket_connect_timeout=5)
        renewer: asyncio.Task[None] | None = None
        try:
            if self._before_connect is not None:
                await self._before_connect()
            await self._connect()
            self.ctx["redis"] = self.pool
            if self.on_startup:
                await self.on_startup(self.ctx)
            self._claim_script = self.pool.register_script(_CLAIM_SCRIPT)
            renewer = asyncio.create_task(self._renew_leases_forever(), name="arq-lease-renewer")
            await self._serve(wake)
        finally:
            if renewer is not None:
                renewer.cancel()
            await wake.aclose()

    async def _connect(self) -> None:
        delay_s = 0.5
        while self._pool is None:
            try:
                self._pool = await create_pool(
                    self.redis_settings,
                    job_deserializer=self.job_deserializer,
                    job_serializer=self.job_serializer,
                    default_queue_name=self.queue_name,
                    expires_extra_ms=self.expires_extra_ms,
                )
            except (RedisError, OSError) as exc:
                self._redis_down(exc)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, MAX_BACKOFF_S)
        self._redis_up()

    async def _serve(self, wake: Redis) -> None:
        delay_s = 0.5
        while True:
            try:
                self._forget_finished_tasks()
                self.allow_pick_jobs = self.ready_to_claim()
                await self._poll_iteration()
                if self.burst and await self._burst_finished():
                    return
                await self._take_woken_jobs(wake, until=asyncio.get_running_loop().time() + self.poll_delay_s)
            except (RedisError, OSError) as exc:
                self._redis_down(exc)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, MAX_BACKOFF_S)
                continue
            self._redis_up()
            delay_s = 0.5

    async def _take_woken_jobs(self, wake: Redis, *, until: float) -> None:
        """Start jobs as their tokens arrive until the next poll is due, however busy the worker is."""
        loop = asyncio.get_running_loop()
        while (remaining_s := until - loop.time()) > 0:
            # Woken with a job id, claim just that job: rescanning the queue on every wake would
            # re-check every job already running, for a cost that grows with the load.
            job_id = await self._wait_for_work(wake, timeout_s=remaining_s)
            if job_id is None:
                return
            self._forget_finished_tasks()
            await self.start_jobs([job_id])

    def _redis_down(self, exc: BaseException) -> None:
        if self._redis_ok:
            log.warning("worker.redis_unreachable", error=str(exc), note="not taking work until it is back")
        self._redis_ok = False

    def _redis_up(self) -> None:
        if not self._redis_ok:
            log.info("worker.redis_reachable")
        self._redis_ok = True

    async def _renew_leases_forever(self) -> None:
        """Keep arq's in-progress key of every running job alive, so no other worker takes it."""
        lease_ms = int(self._lease_s * 1000)
        while True:
            await asyncio.sleep(self._lease_s / 3)
            running = [job_id for job_id, task in self.tasks.items() if not task.done()]
            if not running:
                continue
            try:
                async with self.pool.pipeline(transaction=False) as pipe:
                    for job_id in running:
                        pipe.pexpire(in_progress_key_prefix + job_id, lease_ms)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                # The run's lease in the database is what counts; this one only spares a needless claim.
                log.debug("worker.arq_lease_not_renewed", error=str(exc), jobs=len(running))

    def _forget_finished_tasks(self) -> None:
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                if not task.cancelled() and (exc := task.exception()) is not None:
                    # arq's own bookkeeping around the job failed (Redis went away as it finished):
                    # the run's outcome is in the database, and the reconciler sees to the rest.
                    log.warning("worker.job_bookkeeping_failed", job_id=job_id, error=repr(exc))

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Claim each job, and read it, with one script call instead of arq's WATCH/MULTI round trips."""
        lease_ms = int(self.in_progress_timeout_s * 1000)
        for job_id_bytes in job_ids:
            job_id = job_id_bytes.decode()
            if job_id in self.tasks:
                continue  # already ours: it stays in the queue until it finishes
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                return
            self.job_counter += 1
            try:
                job = await self._claim_script(
                    keys=[in_progress_key_prefix + job_id, job_key_prefix + job_id, self.queue_name],
                    args=[lease_ms, job_id],
                )
            except BaseException:
                self.job_counter -= 1
                self.sem.release()
                raise
            if not job:
                # Started elsewhere, or finished and gone: not ours to run.
                self.job_counter -= 1
                self.sem.release()
                continue
            task = self.loop.create_task(self._run_claimed(job_id, job))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    async def _run_claimed(self, job_id: str, raw: bytes) -> None:
        """arq's `run_job`, less what this service does not use: arq's retry counter (the run's attempts
        are counted in the database, where the claim enforces them), results (none are kept), aborts
        and job hooks. That spares a transaction of five commands before every run starts."""
        try:
            function_name, args, kwargs, _, enqueue_time_ms = deserialize_job_raw(
                raw, deserializer=self.job_deserializer
            )
            function = self.functions[function_name]
        except (SerializationError, KeyError) as exc:
            log.error("worker.job_unreadable", job_id=job_id, error=repr(exc))
            self.jobs_failed += 1
            await asyncio.shield(self._finish_job(job_id, done=True))
            return
        ctx = {**self.ctx, "job_id": job_id, "enqueue_time": ms_to_datetime(enqueue_time_ms)}
        done = True
        self.job_tasks[job_id] = task = self.loop.create_task(function.coroutine(ctx, *args, **kwargs))
        try:
            await asyncio.wait_for(task, self.job_timeout_s if function.timeout_s is None else function.timeout_s)
            self.jobs_complete += 1
        except asyncio.CancelledError:
            # The worker is stopping: the job stays queued, free for another worker at once.
            done = False
            self.jobs_retried += 1
        except Exception as exc:
            log.error("worker.job_failed", job_id=job_id, error=repr(exc), exc_info=exc)
            self.jobs_failed += 1
        finally:
            del self.job_tasks[job_id]
        await asyncio.shield(self._finish_job(job_id, done=done))

    async def _finish_job(self, job_id: str, *, done: bool) -> None:
        async with self.pool.pipeline(transaction=False) as pipe:
            if done:
                pipe.zrem(self.queue_name, job_id)
                # And the retry key that arq's own `run_job` kept, for jobs claimed by a worker before this one.
                pipe.delete(in_progress_key_prefix + job_id, job_key_prefix + job_id, retry_key_prefix + job_id)
            else:
                pipe.delete(in_progress_key_prefix + job_id)
            await pipe.execute()

    async def _burst_finished(self) -> bool:
        if 0 <= self.max_burst_jobs <= self._jobs_started() or await self.pool.zcard(self.queue_name) == 0:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            return True
        return False

    async def _wait_for_work(self, wake: Redis, *, timeout_s: float) -> bytes | None:
        """The id of a job just enqueued, or None when it is time for a full poll of the queue."""
        if not self.allow_pick_jobs:
            await asyncio.sleep(timeout_s)
            return None
        if self.job_counter >= self.max_jobs:
            # Full: a token taken now would be wasted, so wait for a slot (or the next poll) instead.
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), timeout_s)
            return None
        # redis-py types the timeout as int; the server takes fractional seconds since Redis 6.
        popped = await wake.blpop([keys.WAKE_LIST], timeout=max(timeout_s, 0.01))  # type: ignore[arg-type,misc]
        return None if popped is None else popped[1]

    async def _sleep_until_tasks_complete(self) -> None:
        # arq counts finished tasks too until its next poll clears them, which here is a blocking pop
        # away: a stopping worker would linger a whole poll delay after its last job.
        running = [task for task in self.tasks.values() if not task.done()]
        if running:
            await asyncio.wait(running)

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._slot_freed.set()
