"""`switchboard status`: how the deployment stands, read from Redis and the database.

Redis: reachable, its version, the workers that reported in within `keys.WORKER_STALE_S` (their
heartbeats, written by workers/leases.py) and the queue's depth (jobs queued or being run, as the API's
queue cap counts them). The database: reachable, migrated to the newest revision, the oldest queued
run, and the runs accepted in the last hour by state. Each half is reported even when the other is
unreachable; the exit status is non-zero when either is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from arq.constants import job_key_prefix
from redis.exceptions import RedisError
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from domain import keys, run_admin
from domain.database import unavailable_on_connection_errors
from domain.errors import ServiceUnavailable
from domain.settings import Settings
from switchboard._backends import (
    EXIT_FAILED,
    Backends,
    connected,
    database_address,
    redis_address,
    say_error,
    unreachable_database,
    unreachable_redis,
)
from switchboard.migrate import alembic_config

RECENT_S = 3600.0


@dataclass(kw_only=True)
class RedisStatus:
    address: str
    reachable: bool = False
    version: str | None = None
    workers: list[dict[str, Any]] = field(default_factory=list)
    queue_depth: int | None = None
    error: str | None = None


@dataclass(kw_only=True)
class DatabaseStatus:
    address: str
    reachable: bool = False
    revision: str | None = None
    head: str | None = None
    migrated: bool | None = None
    oldest_queued: dict[str, Any] | None = None
    runs_last_hour: dict[str, int] | None = None
    error: str | None = None


def run_status(settings: Settings, *, as_json: bool) -> int:
    redis_status, database_status = asyncio.run(_gather(settings))
    if as_json:
        print(json.dumps({"redis": asdict(redis_status), "database": asdict(database_status)}, indent=2))
    else:
        print(_human(redis_status, database_status))
    failed = False
    if redis_status.error is not None:
        say_error(redis_status.error)
        failed = True
    if database_status.error is not None:
        say_error(database_status.error)
        failed = True
    return EXIT_FAILED if failed else 0


async def _gather(settings: Settings) -> tuple[RedisStatus, DatabaseStatus]:
    async with connected(settings) as backends:
        redis_status, database_status = await asyncio.gather(
            _redis_status(settings, backends), _database_status(settings, backends)
        )
        # The oldest queued run's job: missing from Redis means no worker will ever see it, until the
        # reconciler (or `switchboard runs retry`) queues it again.
        oldest = database_status.oldest_queued
        if redis_status.reachable and oldest is not None and not oldest["waits_for_earlier_turn"]:
            with contextlib.suppress(RedisError, OSError):
                oldest["job_in_redis"] = bool(await backends.redis.exists(job_key_prefix + oldest["id"]))
    return redis_status, database_status


async def _redis_status(settings: Settings, backends: Backends) -> RedisStatus:
    status = RedisStatus(address=redis_address(settings))
    redis = backends.redis
    try:
        info = await redis.info("server")
        now = time.time()
        beats = await redis.zrangebyscore(keys.WORKERS, now - keys.WORKER_STALE_S, "+inf", withscores=True)
        depth = await redis.zcard(keys.QUEUE_NAME)
    except (RedisError, OSError) as exc:
        status.error = unreachable_redis(settings, exc)
        return status
    status.reachable = True
    status.version = str(info.get("redis_version", "unknown"))
    status.workers = [
        {"id": worker.decode(), "last_heartbeat_s_ago": round(max(0.0, now - score), 1)} for worker, score in beats
    ]
    status.queue_depth = int(depth)
    return status


async def _database_status(settings: Settings, backends: Backends) -> DatabaseStatus:
    status = DatabaseStatus(address=database_address(settings))
    missing = _missing_sqlite_file(settings.database_url)
    if missing is not None:
        # Connecting would create an empty database there: say it is not there instead.
        status.error = f"the database file {missing} does not exist (SWITCHBOARD_DATABASE_URL)"
        return status
    try:
        async with unavailable_on_connection_errors(), backends.db_engine.connect() as connection:
            status.reachable = True
            status.head = ScriptDirectory.from_config(alembic_config(settings.database_url)).get_current_head()
            # A database never migrated has no version table at all.
            if await connection.run_sync(lambda sync: inspect(sync).has_table("alembic_version")):
                result = await connection.execute(text("SELECT version_num FROM alembic_version"))
                status.revision = result.scalar_one_or_none()
            status.migrated = status.revision is not None and status.revision == status.head
            if not status.migrated:
                return status
            oldest = await run_admin.oldest_queued(connection)
            if oldest is not None:
                status.oldest_queued = {
                    "id": oldest.id,
                    "user_id": oldest.user_id,
                    "age_s": round(_age_s(oldest.created_at), 1),
                    "waits_for_earlier_turn": await run_admin.waits_for_earlier_turn(connection, oldest.id),
                }
            status.runs_last_hour = await run_admin.counts_since(connection, age_s=RECENT_S)
    except ServiceUnavailable as exc:
        status.reachable = False
        status.error = unreachable_database(settings, exc)
    return status


def _missing_sqlite_file(database_url: str) -> str | None:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return None if Path(url.database).exists() else url.database


def _age_s(moment: datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # SQLite hands back naive UTC
    return max(0.0, (datetime.now(UTC) - moment).total_seconds())


def _human(redis_status: RedisStatus, database_status: DatabaseStatus) -> str:
    lines = []
    if redis_status.reachable:
        lines.append(f"Redis       reachable, version {redis_status.version} ({redis_status.address})")
        lines.append(f"Workers     {len(redis_status.workers)} live")
        for worker in redis_status.workers:
            lines.append(f"              {worker['id']}  (heartbeat {worker['last_heartbeat_s_ago']:g} s ago)")
        lines.append(f"Queue       {redis_status.queue_depth} job(s) queued or being run")
    else:
        lines.append(f"Redis       UNREACHABLE ({redis_status.address})")
        lines.append("Workers     unknown")
        lines.append("Queue       unknown")
    db = database_status
    if not db.reachable:
        lines.append(f"Database    UNREACHABLE ({db.address})")
        return "\n".join(lines)
    if db.migrated:
        lines.append(f"Database    reachable, migrated to head {db.head} ({db.address})")
    else:
        lines.append(
            f"Database    reachable, NOT migrated: at {db.revision or 'no revision'}, head is {db.head}; "
            f"run `switchboard migrate` ({db.address})"
        )
        return "\n".join(lines)
    oldest = db.oldest_queued
    if oldest is None:
        lines.append("Oldest      no run is queued")
    else:
        note = ""
        if oldest["waits_for_earlier_turn"]:
            note = "  (it waits for an earlier turn of its conversation)"
        elif oldest.get("job_in_redis") is False:
            note = "  (its job is missing from Redis: `switchboard runs retry` queues it again)"
        lines.append(f"Oldest      {oldest['id']} ({oldest['user_id']}), queued {oldest['age_s']:g} s ago{note}")
    counts = db.runs_last_hour or {}
    summary = ", ".join(f"{state} {count}" for state, count in counts.items())
    lines.append(f"Last hour   {sum(counts.values())} run(s): {summary}")
    return "\n".join(lines)
