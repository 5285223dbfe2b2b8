"""durable runs: what each run's model is given, its lease, idempotency keys, unfinished-run indexes

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("spec", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("idempotency_key", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_unique_constraint("uq_runs_user_idempotency_key", ["user_id", "idempotency_key"])
    op.create_index(
        "ix_runs_unfinished_created", "runs", ["created_at"], postgresql_where=UNFINISHED, sqlite_where=UNFINISHED
    )
    op.create_index(
        "ix_runs_unfinished_user", "runs", ["user_id"], postgresql_where=UNFINISHED, sqlite_where=UNFINISHED
    )


def downgrade() -> None:
    op.drop_index("ix_runs_unfinished_user", table_name="runs")
    op.drop_index("ix_runs_unfinished_created", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("uq_runs_user_idempotency_key", type_="unique")
        batch.drop_column("lease_expires_at")
        batch.drop_column("started_at")
        batch.drop_column("request_hash")
        batch.drop_column("idempotency_key")
        batch.drop_column("spec")
