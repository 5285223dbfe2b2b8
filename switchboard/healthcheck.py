"""`switchboard healthcheck api|worker`: exit 0 when this host's process is healthy, for container healthchecks.

The API is healthy when `/healthz` answers on its port. A worker is healthy when a worker on this host
has reported in (its heartbeat in Redis, see workers/leases.py) within one run lease: a worker that
cannot reach the database stops reporting, since it can carry no run to its end.
"""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request

from redis.asyncio import Redis
from redis.exceptions import RedisError

from domain import keys
from domain.settings import Settings


def api_healthy(*, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def worker_healthy(settings: Settings) -> bool:
    return asyncio.run(_worker_reported(settings))


async def _worker_reported(settings: Settings) -> bool:
    redis = Redis.from_url(settings.redis_url, socket_timeout=3, socket_connect_timeout=3)
    try:
        beats = await redis.zrangebyscore(keys.WORKERS, time.time() - settings.run_lease_s, "+inf")
    except (RedisError, OSError):
        return False
    finally:
        await redis.aclose()
    host = socket.gethostname() + ":"
    return any(beat.decode().startswith(host) for beat in beats)
