"""The database engine, built by each process's start-up and disposed at its shutdown, and its helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from domain.errors import DatabaseUnavailable, SwitchboardError


def create_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    if database_url.startswith("sqlite"):
        _ensure_sqlite_directory(database_url)
        engine = create_async_engine(database_url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        database_url,
        # No overflow: an overflow connection is closed as soon as it is returned, which under load
        # means a new connection (and a new server process) per request. Waiting for a pooled
        # connection is far cheaper, since every hot-path transaction is a few short statements.
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args={"timeout": 5, "command_timeout": 30},
    )


def _ensure_sqlite_directory(database_url: str) -> None:
    path = database_url.split(":///", 1)[-1].split("?", 1)[0]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The API and the workers are separate processes writing one file: WAL lets readers run beside a
    # writer, and busy_timeout makes a writer wait for the lock instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@asynccontextmanager
async def unavailable_on_connection_errors() -> AsyncIterator[None]:
    """Translate "the database is not there" into our error, and our own errors raised while a statement
    was built (unstorable text, see `domain.models.StoredText`) back into themselves; let every other
    database error through."""
    try:
        yield
    except (OperationalError, DBAPIError) as exc:
        if isinstance(exc, OperationalError) or exc.connection_invalidated or _says_unavailable(exc):
            raise DatabaseUnavailable("the database is unreachable") from exc
        raise
    except StatementError as exc:
        if isinstance(exc.orig, SwitchboardError):
            raise exc.orig from exc
        raise
    except (OSError, TimeoutError) as exc:
        raise DatabaseUnavailable("the database is unreachable") from exc


# SQLSTATEs a server sends while it goes away or is not there yet: class 08 (connection exceptions),
# 53300 (too many connections), 57P01-57P03 (shut down by an operator, crashed, starting up). A
# `pg_ctl stop -m fast` reaches a client mid-statement as 57P01 before its connection reads as
# closed, so SQLAlchemy does not mark it invalidated.
_UNAVAILABLE_STATES = ("08", "53300", "57P01", "57P02", "57P03")


def _says_unavailable(exc: DBAPIError) -> bool:
    state = getattr(exc.orig, "sqlstate", None)
    return isinstance(state, str) and state.startswith(_UNAVAILABLE_STATES)


async def ping(engine: AsyncEngine) -> None:
    async with unavailable_on_connection_errors(), engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


def conflict_insert(connection: AsyncConnection, table: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can say ON CONFLICT, in the dialect of `connection` (both speak the same clause)."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


class InsertOrNothing:
    """`INSERT ... ON CONFLICT (index_elements) DO NOTHING [RETURNING ...]`, built once per dialect and
    executed with the row as parameters.

    Statements on the hot path are built once, at import: SQLAlchemy then finds their compiled form by
    a cache key it has memoized on the statement, where a statement built per call costs its
    construction and a fresh cache key every time (milliseconds, for a statement with a subquery).
    """

    def __init__(self, table: Any, *, index_elements: Sequence[str], returning: Any = None) -> None:
        self._by_dialect: dict[str, Any] = {}
        for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite)):
            statement = dialect.insert(table).on_conflict_do_nothing(index_elements=list(index_elements))
            self._by_dialect[name] = statement.returning(returning) if returning is not None else statement

    def on(self, connection: AsyncConnection) -> Any:
        return self._by_dialect[connection.dialect.name]
