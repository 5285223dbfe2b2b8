"""Migrations go up and down on both databases, and the models match what they build.

`switchboard.migrate.upgrade/downgrade` run Alembic, whose environment calls `asyncio.run`, so they are
called from a thread here.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from domain.models import Base
from switchboard.migrate import alembic_config, downgrade, upgrade

APP_TABLES = {"conversations", "messages", "runs"}


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest_asyncio.fixture(loop_scope="session", params=["postgres", "sqlite"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
        return
    admin_url: str = request.getfixturevalue("postgres_url")
    name = f"sb_migrations_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(_plain(admin_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        admin = await asyncpg.connect(_plain(admin_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def inspect_database(url: str) -> dict[str, Any]:
    """Tables, the stored Alembic revision, and Alembic's autogenerate diff against the models."""

    def look(connection: Connection) -> dict[str, Any]:
        tables = set(inspect(connection).get_table_names())
        context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": False})
        return {
            "tables": tables,
            "revision": context.get_current_revision(),
            "diff": compare_metadata(context, Base.metadata) if tables >= APP_TABLES else None,
        }

    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(look)
    finally:
        await engine.dispose()


def head_revision(url: str) -> str:
    heads = ScriptDirectory.from_config(alembic_config(url)).get_heads()
    assert len(heads) == 1, f"migrations must form one line of history, found heads {heads}"
    return heads[0]


async def test_migrations_go_up_down_and_up_again(database_url: str) -> None:
    head = head_revision(database_url)
    assert (await inspect_database(database_url))["tables"] == set()

    await asyncio.to_thread(upgrade, database_url)
    state = await inspect_database(database_url)
    assert state["tables"] >= APP_TABLES
    assert state["revision"] == head
    assert state["diff"] == [], "domain/models.py and the migrations disagree"

    await asyncio.to_thread(downgrade, database_url, "base")
    state = await inspect_database(database_url)
    assert state["tables"] & APP_TABLES == set()
    assert state["revision"] is None

    await asyncio.to_thread(upgrade, database_url)
    state = await inspect_database(database_url)
    assert state["tables"] >= APP_TABLES
    assert state["revision"] == head
    assert state["diff"] == []

    # Upgrading a database that is already at head changes nothing.
    await asyncio.to_thread(upgrade, database_url)
    assert (await inspect_database(database_url))["revision"] == head


async def test_the_migrated_schema_works(database_url: str) -> None:
    """Constraints the models promise exist in the migrated database: a key is unique per user only."""
    await asyncio.to_thread(upgrade, database_url)
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            for user in ("alice", "bob"):
                await connection.execute(
                    text(
                        "INSERT INTO conversations (user_id, key, created_at, updated_at) "
                        "VALUES (:user, 'same', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                    ),
                    {"user": user},
                )
        with pytest.raises(Exception, match=r"(?i)unique"):
            async with engine.begin() as connection:
                await connection.execute(
                    text(
                        "INSERT INTO conversations (user_id, key, created_at, updated_at) "
                        "VALUES ('alice', 'same', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                    )
                )
    finally:
        await engine.dispose()


async def _switchboard(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "switchboard",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def test_the_migrate_command(database_url: str, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SWITCHBOARD_")}
    env["SWITCHBOARD_DATABASE_URL"] = database_url
    code, output = await _switchboard("migrate", env=env, cwd=tmp_path)
    assert code == 0, output
    assert "Traceback" not in output
    state = await inspect_database(database_url)
    assert state["tables"] >= APP_TABLES
    assert state["revision"] == head_revision(database_url)
    assert state["diff"] == []

    # Running it again is harmless.
    code, output = await _switchboard("migrate", env=env, cwd=tmp_path)
    assert code == 0, output
