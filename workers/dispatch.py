"""An arq worker that starts jobs as soon as they are enqueued, instead of on its next poll.

arq's `Worker.main` sleeps `poll_delay` between looks at the queue, which adds up to that much before
a job starts. Here an idle worker blocks on a Redis list instead; the API pushes one token per job, and
Redis hands each token to exactly one blocked worker, so one job wakes one worker. The poll stays as a
fallback for deferred jobs, retries and any token that was lost.

This overrides arq internals (`main`, `_poll_iteration`, `_release_sem_dec_counter_on_complete`), so
arq is pinned to the exact version this was written against.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from arq.connections import create_pool
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker
from redis.asyncio import Redis

from domain import keys

# KEYS: in-progress key, queue. ARGV: job id, now ms, lease ms. Returns the job's score if claimed.
_CLAIM_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then
  return false
end
redis.call('PSETEX', KEYS[1], ARGV[3], '1')
return score
"""


class WakeableWorker(Worker):
    def __init__(self, *args: Any, wake_redis_url: str, lease_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wake_redis_url = wake_redis_url
        self._slot_freed = asyncio.Event()
        # arq marks a running job with a key that lives for the job timeout plus 10 s, so a job whose
        # worker died is retried only after that, minutes later. A short lease, renewed while the job
        # runs, lets another worker retry it within seconds of the death.
        self.in_progress_timeout_s = lease_s
        self._lease_s = lease_s

    async def main(self) -> None:
        # Blocking pops need a connection of their own: on the shared pool one would stall every other
        # command queued behind it.
        wake = Redis.from_url(self._wake_redis_url, socket_timeout=None, socket_connect_timeout=10)
        renewer: asyncio.Task[None] | None = None
        try:
            await self._connect()
            renewer = asyncio.create_task(self._renew_leases())
            await self._main_loop(wake)
        finally:
            if renewer is not None:
                renewer.cancel()
            await wake.aclose()

    async def _connect(self) -> None:
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )

    async def _renew_leases(self) -> None:
        lease_ms = int(self._lease_s * 1000)
        while True:
            await asyncio.sleep(self._lease_s / 3)
            running = [job_id for job_id, task in self.tasks.items() if not task.done()]
            if running:
                async with self.pool.pipeline(transaction=False) as pipe:
                    for job_id in running:
                        pipe.pexpire(in_progress_key_prefix + job_id, lease_ms)
                    await pipe.execute()

    async def _main_loop(self, wake: Redis) -> None:
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        self._claim_script = self.pool.register_script(_CLAIM_SCRIPT)
        while True:
            await self._poll_iteration()
            if self.burst and await self._burst_finished():
                return
            # Woken with a job id, claim just that job: rescanning the queue on every wake would
            # re-check every job already running, for a cost that grows with the load.
            while (job_id := await self._wait_for_work(wake)) is not None:
                self._forget_finished_tasks()
                await self.start_jobs([job_id])

    def _forget_finished_tasks(self) -> None:
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                task.result()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Claim each job with one script call instead of arq's WATCH/MULTI round trips."""
        for job_id_bytes in job_ids:
            job_id = job_id_bytes.decode()
            if job_id in self.tasks:
                continue  # already ours: it stays in the queue until it finishes
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                return
            self.job_counter += 1
            score = await self._claim_script(
                keys=[in_progress_key_prefix + job_id, self.queue_name],
                args=[job_id, timestamp_ms(), int(self.in_progress_timeout_s * 1000)],
            )
            if not score:
                # Started elsewhere, finished and gone, or deferred: not ours to run now.
                self.job_counter -= 1
                self.sem.release()
                continue
            task = self.loop.create_task(self.run_job(job_id, int(score)))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    async def _burst_finished(self) -> bool:
        if 0 <= self.max_burst_jobs <= self._jobs_started() or await self.pool.zcard(self.queue_name) == 0:
            await asyncio.gather(*self.tasks.values())
            return True
        return False

    async def _wait_for_work(self, wake: Redis) -> bytes | None:
        """The id of a job just enqueued, or None when it is time for a full poll of the queue."""
        if not self.allow_pick_jobs:
            await asyncio.sleep(self.poll_delay_s)
            return None
        if self.job_counter >= self.max_jobs:
            # Full: a token taken now would be wasted, so wait for a slot (or the fallback poll) instead.
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), self.poll_delay_s)
            return None
        # redis-py types the timeout as int; the server takes fractional seconds since Redis 6.
        popped = await wake.blpop([keys.WAKE_LIST], timeout=self.poll_delay_s)  # type: ignore[arg-type,misc]
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
