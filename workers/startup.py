"""A worker's start: it waits for Redis and the database to answer, saying which one it waits for.

Started before its dependencies (a compose file, a machine booting, a newcomer without Redis yet), a
worker should neither exit nor print a traceback: it logs one line per failed try, naming the setting
and the address, and tries again later each time (1, 2, 4 ... 30 s), carrying on by itself once
both answer.
"""

from __future__ import annotations

import asyncio

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.engine import make_url

from domain.database import create_engine
from domain.settings import Settings

log = structlog.get_logger("switchboard.worker.startup")

FIRST_RETRY_S = 1.0
MAX_RETRY_S = 30.0
PROBE_TIMEOUT_S = 5.0


async def wait_for_dependencies(
    settings: Settings, *, first_retry_s: float = FIRST_RETRY_S, max_retry_s: float = MAX_RETRY_S
) -> None:
    retry_s = first_retry_s
    waited = False
    while True:
        redis_ok = await _redis_answers(settings, retry_s)
        database_ok = await _database_answers(settings, retry_s)
        if redis_ok and database_ok:
            if waited:
                log.info("worker.dependencies_reachable")
            return
        waited = True
        await asyncio.sleep(retry_s)
        retry_s = min(retry_s * 2, max_retry_s)


async def _redis_answers(settings: Settings, retry_s: float) -> bool:
    client = Redis.from_url(settings.redis_url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        kwargs = client.connection_pool.connection_kwargs
        address = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        _unreachable("worker.redis_unreachable", "SWITCHBOARD_REDIS_URL", str(address), exc, retry_s)
        return False
    finally:
        await client.aclose()
    return True


async def _database_answers(settings: Settings, retry_s: float) -> bool:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    # Anything the driver raises while connecting means "not yet": refused, no such host, a wrong password
    # or a missing database (asyncpg raises those as its own classes, not SQLAlchemy's).
    except Exception as exc:
        address = make_url(settings.database_url).render_as_string(hide_password=True)
        _unreachable("worker.database_unreachable", "SWITCHBOARD_DATABASE_URL", address, exc, retry_s)
        return False
    finally:
        await engine.dispose()
    return True


def _unreachable(event: str, setting: str, address: str, exc: BaseException, retry_s: float) -> None:
    """One line: the same event the running worker logs when it loses that dependency, with what to fix."""
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy's wrapper: the driver's words are the news
    words = str(cause).strip().splitlines()
    log.warning(
        event,
        setting=setting,
        address=address,
        error=words[0] if words else type(cause).__name__,
        retry_in_s=retry_s,
    )
