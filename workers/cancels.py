"""Stopping a run on the worker that carries it, as soon as its owner asks.

A cancel is recorded in the run's row first (`domain.runs.request_cancel`), then announced on one
Redis channel that every worker listens to; the worker holding the run cancels its agent task, which
stops the model's stream and any tool call in flight. Should the announcement be lost (Redis away),
the lease renewal reads the request from the row within a third of a lease.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from domain import keys

log = structlog.get_logger("switchboard.worker.cancels")


class Cancellations:
    def __init__(self, redis_url: str) -> None:
        self._redis_url = redis_url
        self._running: dict[str, asyncio.Task[object]] = {}
        self._asked: set[str] = set()
        self._listener: asyncio.Task[None] | None = None

    def track(self, run_id: str, task: asyncio.Task[object]) -> None:
        self._running[run_id] = task
        if run_id in self._asked:
            task.cancel()

    def forget(self, run_id: str) -> None:
        self._running.pop(run_id, None)
        self._asked.discard(run_id)

    def asked(self, run_id: str) -> bool:
        """Whether the run's owner asked to stop it (rather than the worker stopping for its own reasons)."""
        return run_id in self._asked

    def cancel(self, run_id: str) -> None:
        task = self._running.get(run_id)
        if task is None or run_id in self._asked:
            return
        self._asked.add(run_id)
        log.info("run.cancelling", run_id=run_id)
        task.cancel()

    def start(self) -> None:
        self._listener = asyncio.create_task(self._listen_forever(), name="cancel-listener")

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def _listen_forever(self) -> None:
        redis = Redis.from_url(self._redis_url, socket_timeout=None, socket_keepalive=True)
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            while True:
                try:
                    if not pubsub.subscribed:
                        await pubsub.subscribe(keys.CANCELS)
                    message = await pubsub.get_message(timeout=None)
                except (RedisError, OSError):
                    # The lease renewal reads cancel requests from the database meanwhile.
                    await asyncio.sleep(1.0)
                    continue
                if message is not None and message.get("type") == "message":
                    data = message["data"]
                    self.cancel(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
            await redis.aclose()
