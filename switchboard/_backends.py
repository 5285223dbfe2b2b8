"""The database and Redis as the admin commands reach them: short timeouts, addresses without secrets,
and one line per dependency that cannot be reached."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.database import create_engine
from domain.settings import Settings

# A dependency could not be reached, or a run could not be acted on as asked.
EXIT_FAILED = 1


@dataclass(frozen=True, kw_only=True)
class Backends:
    db_engine: AsyncEngine
    redis: Redis


@asynccontextmanager
async def connected(settings: Settings) -> AsyncIterator[Backends]:
    """An engine and a Redis client for one command; nothing connects until first used."""
    db_engine = create_engine(settings.database_url, pool_size=2)
    redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=3)
    try:
        yield Backends(db_engine=db_engine, redis=redis)
    finally:
        await redis.aclose()
        await db_engine.dispose()


def database_address(settings: Settings) -> str:
    return make_url(settings.database_url).render_as_string(hide_password=True)


def redis_address(settings: Settings) -> str:
    parts = urlsplit(settings.redis_url)
    if parts.password is None:
        return settings.redis_url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def unreachable_database(settings: Settings, exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    # SQLAlchemy's wrapper leads with its own class names; the driver's words are the useful part.
    cause = getattr(cause, "orig", None) or cause
    return f"the database is unreachable at {database_address(settings)} (SWITCHBOARD_DATABASE_URL): {_short(cause)}"


def unreachable_redis(settings: Settings, exc: BaseException) -> str:
    return f"Redis is unreachable at {redis_address(settings)} (SWITCHBOARD_REDIS_URL): {_short(exc)}"


def say_error(line: str) -> None:
    print(f"switchboard: {line}", file=sys.stderr)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
