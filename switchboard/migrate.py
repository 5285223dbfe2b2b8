"""Running the Alembic migrations from code, for `switchboard migrate` and `switchboard dev`.

Alembic announces every plugin it loads and every step it takes at INFO; a person running `migrate`
wants one line: which database, and at which revision it now is. So its log records are listened to
here, not shown, and summed up in an `UpgradeResult`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import RevisionStep
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import make_url

from domain.database import create_engine

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, kw_only=True)
class UpgradeResult:
    database: str
    """The database's URL without its password."""
    from_revision: str | None
    to_revision: str | None
    steps: int
    created_folder: Path | None
    """The folder made for an SQLite file whose folder did not exist yet."""

    def summary(self) -> str:
        if self.steps == 0:
            return f"The database at {self.database} is up to date (revision {self.to_revision})."
        return (
            f"Upgraded the database at {self.database} from revision {self.from_revision or '(empty)'} "
            f"to {self.to_revision} ({self.steps} migration{'s' if self.steps != 1 else ''})."
        )


def alembic_config(database_url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    return config


class DatabaseUnreachable(Exception):
    """The database did not answer before migrating; the message is one line naming the setting."""

    def __init__(self, database_url: str, cause: BaseException) -> None:
        cause = getattr(cause, "orig", None) or cause  # SQLAlchemy's wrapper: the driver's words are the news
        words = str(cause).strip().splitlines()
        super().__init__(
            f"the database is unreachable at {database_address(database_url)} (SWITCHBOARD_DATABASE_URL): "
            + (words[0] if words else type(cause).__name__)
        )


def upgrade(database_url: str, revision: str = "head") -> UpgradeResult:
    """Migrate to `revision`; `DatabaseUnreachable` when the database does not answer at all."""
    created_folder = _make_sqlite_folder(database_url)
    problem = database_problem(database_url)
    if problem is not None:
        raise DatabaseUnreachable(database_url, problem)
    config = alembic_config(database_url)
    with _alembic_steps() as steps:
        command.upgrade(config, revision)
    head = ScriptDirectory.from_config(config).get_current_head()
    return UpgradeResult(
        database=database_address(database_url),
        from_revision=",".join(steps[0][0]) if steps else None,
        to_revision=",".join(steps[-1][1]) if steps else head,
        steps=len(steps),
        created_folder=created_folder,
    )


def downgrade(database_url: str, revision: str) -> None:
    with _alembic_steps():
        command.downgrade(alembic_config(database_url), revision)


def database_address(database_url: str) -> str:
    return make_url(database_url).render_as_string(hide_password=True)


def database_problem(database_url: str, *, timeout_s: float = 10.0) -> BaseException | None:
    """Why the database cannot be reached, or None when it answers.

    Asked before migrating, so that a database that is not there is one line naming the setting, not
    a traceback from deep inside Alembic and the driver. Any failure to connect counts: refused, no
    such host, a wrong password, a missing database.
    """

    async def ping() -> None:
        engine = create_engine(database_url, pool_size=1)
        try:
            async with asyncio.timeout(timeout_s), engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        finally:
            await engine.dispose()

    try:
        asyncio.run(ping())
    except Exception as exc:  # whatever the driver raises, it means "not reachable from here"
        return exc
    return None


def _make_sqlite_folder(database_url: str) -> Path | None:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    folder = Path(url.database).parent
    if folder.exists():
        return None
    folder.mkdir(parents=True)
    return folder


class _StepRecorder(logging.Filter):
    """Records the (from, to) revisions of each step from Alembic's "Running <step>" lines, and lets only
    its warnings and errors through."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[tuple[tuple[str, ...], tuple[str, ...]]] = []

    def filter(self, record: logging.LogRecord) -> bool:
        step = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if record.msg == "Running %s" and isinstance(step, RevisionStep):
            self.steps.append((tuple(step.from_revisions), tuple(step.to_revisions)))
        return record.levelno >= logging.WARNING


@contextmanager
def _alembic_steps() -> Iterator[list[tuple[tuple[str, ...], tuple[str, ...]]]]:
    """While Alembic runs: its INFO lines (plugins loaded, steps run) kept out of the log, its steps recorded."""
    alembic = logging.getLogger("alembic")
    migration = logging.getLogger("alembic.runtime.migration")
    recorder = _StepRecorder()
    saved_levels = (alembic.level, migration.level)
    alembic.setLevel(logging.WARNING)
    migration.setLevel(logging.INFO)
    migration.addFilter(recorder)
    try:
        yield recorder.steps
    finally:
        migration.removeFilter(recorder)
        alembic.setLevel(saved_levels[0])
        migration.setLevel(saved_levels[1])
