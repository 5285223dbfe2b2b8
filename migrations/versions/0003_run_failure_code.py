"""a run's failure code in a column of its own

Revision ID: 0003
Revises: 0002

Runs that failed before this revision kept "code: message" in `error`; the code moves to
`error_code` and the message stays.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

runs = sa.table("runs", sa.column("id", sa.String), sa.column("error", sa.Text), sa.column("error_code", sa.String))


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("error_code", sa.String(length=32), nullable=True))
    connection = op.get_bind()
    failed = connection.execute(sa.select(runs.c.id, runs.c.error).where(runs.c.error.is_not(None))).all()
    for run_id, error in failed:
        code, sep, message = error.partition(": ")
        if sep and code.isidentifier():
            connection.execute(runs.update().where(runs.c.id == run_id).values(error_code=code, error=message))


def downgrade() -> None:
    connection = op.get_bind()
    connection.execute(
        runs.update()
        .where(runs.c.error_code.is_not(None))
        .values(error=runs.c.error_code + ": " + sa.func.coalesce(runs.c.error, ""))
    )
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("error_code")
