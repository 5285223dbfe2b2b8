"""One Redis pub/sub connection per API process, shared by every open stream.

A stream subscribes to its run's channel and waits for Redis to confirm the subscription before the
job is enqueued, so no event can be published before someone is listening. Should the connection
drop, every open subscription is told there was a gap and catches up from the run's replay log.

A subscription holds at most `MAX_BUFFERED_BYTES` of events its stream has not taken yet. A client
that does not read its stream stops the stream taking them; past the limit the held events are
dropped for a gap, and the stream catches up from the replay log when its client reads again. So an
unread stream costs a bounded buffer, not the whole answer in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from domain import keys
from domain.errors import RedisUnavailable
from domain.event_log import decode_published
from domain.events import RunEvent

log = structlog.get_logger("switchboard.api.hub")

SUBSCRIBE_TIMEOUT_S = 5.0
MAX_BUFFERED_BYTES = 1 << 20


class Gap:
    """Put in a subscription's queue when live delivery may have missed events."""


class Stop:
    """Put in a subscription's queue to end its stream early (the server is shutting down)."""


GAP = Gap()
STOP = Stop()


@dataclass(eq=False)
class Subscription:
    run_id: str
    confirmed: asyncio.Future[None]
    # Each item with the size of the message it came in (0 for a gap or a stop).
    queue: asyncio.Queue[tuple[RunEvent | Gap | Stop, int]] = field(default_factory=asyncio.Queue)
    buffered_bytes: int = 0

    def offer(self, event: RunEvent, size: int) -> None:
        if self.buffered_bytes + size > MAX_BUFFERED_BYTES:
            self._drop_events_for_a_gap()
            return  # it is in the replay log, where the catch-up finds it
        self.buffered_bytes += size
        self.queue.put_nowait((event, size))

    def interrupt(self, item: Gap | Stop) -> None:
        self.queue.put_nowait((item, 0))

    async def take(self) -> RunEvent | Gap | Stop:
        item, size = await self.queue.get()
        self.buffered_bytes -= size
        return item

    def _drop_events_for_a_gap(self) -> None:
        kept = [item for item, _ in _drain(self.queue) if isinstance(item, Stop)]
        self.buffered_bytes = 0
        self.queue.put_nowait((GAP, 0))
        for item in kept:
            self.queue.put_nowait((item, 0))

    async def ready(self) -> None:
        """Wait until Redis has confirmed the subscription: from then on, nothing published is missed."""
        try:
            await asyncio.wait_for(asyncio.shield(self.confirmed), SUBSCRIBE_TIMEOUT_S)
        except TimeoutError as exc:
            raise RedisUnavailable("Redis did not confirm a subscription") from exc


class RunEventHub:
    def __init__(self, redis_url: str) -> None:
        # No socket timeout: the reader blocks on this connection for as long as the process lives.
        self._redis = Redis.from_url(redis_url, socket_timeout=None, socket_keepalive=True)
        self._pubsub = self._redis.pubsub()
        self._subscribers: dict[bytes, set[Subscription]] = {}
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._connected = True
        # A channel of our own keeps the connection subscribed, so reading never stops for lack of one.
        self._home = f"{keys.PREFIX}api:{secrets.token_hex(8)}".encode()

    async def start(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.subscribe(self._home)
        self._reader = asyncio.create_task(self._read_forever(), name="run-event-hub")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()
        await self._redis.aclose()

    @contextlib.asynccontextmanager
    async def subscribe(self, run_id: str) -> AsyncIterator[Subscription]:
        """Listen to a run. Entering sends the subscription; `ready()` waits for Redis to confirm it,
        so the caller can do other work (the database write) while the confirmation travels."""
        channel = keys.run_channel(run_id).encode()
        subscribers = self._subscribers.setdefault(channel, set())
        confirmed = self._confirmations.get(channel)
        if confirmed is None:
            confirmed = asyncio.get_running_loop().create_future()
            if subscribers:
                confirmed.set_result(None)
            else:
                self._confirmations[channel] = confirmed
        subscription = Subscription(run_id=run_id, confirmed=confirmed)
        subscribers.add(subscription)
        try:
            if len(subscribers) == 1:
                try:
                    await self._pubsub.subscribe(channel)
                except (RedisError, OSError) as exc:
                    raise RedisUnavailable("Redis is unreachable") from exc
            yield subscription
        finally:
            subscribers.discard(subscription)
            if not subscribers and self._subscribers.get(channel) is subscribers:
                del self._subscribers[channel]
                self._confirmations.pop(channel, None)
                with contextlib.suppress(RedisError, OSError):
                    await self._pubsub.unsubscribe(channel)

    async def _read_forever(self) -> None:
        while True:
            try:
                if self._pubsub.connection is None:
                    await self._pubsub.subscribe(self._home)
                message = await self._pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                # Whatever Redis said (gone, timed out, still loading its data), every open stream
                # may have missed events: each catches up from its replay log, or from the database.
                if self._connected:
                    log.warning("hub.connection_lost", error=str(exc))
                    self._signal_gap()
                self._connected = False
                await asyncio.sleep(0.5)
                continue
            if not self._connected:
                # Resubscribed: whatever was published before the subscriptions were back is in the logs.
                log.info("hub.connection_restored")
                self._connected = True
                self._signal_gap()
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, object]) -> None:
        kind = message["type"]
        channel = message["channel"]
        assert isinstance(channel, bytes)
        if kind == "message":
            subscribers = self._subscribers.get(channel)
            if subscribers:
                data = message["data"]
                assert isinstance(data, bytes)
                events = decode_published(data)
                size = len(data) // len(events)
                for subscription in subscribers:
                    for event in events:
                        subscription.offer(event, size)
        elif kind == "subscribe":
            confirmed = self._confirmations.pop(channel, None)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)

    def _signal_gap(self) -> None:
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.interrupt(GAP)


def _drain(queue: asyncio.Queue[tuple[RunEvent | Gap | Stop, int]]) -> list[tuple[RunEvent | Gap | Stop, int]]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
