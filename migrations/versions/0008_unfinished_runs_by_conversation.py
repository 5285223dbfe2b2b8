"""the unfinished runs of a conversation, indexed: a claim asks whether an earlier turn is unfinished

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNFINISHED = "status IN ('queued', 'running')"


def upgrade() -> None:
    op.create_index(
        "ix_runs_unfinished_conversation",
        "runs",
        ["conversation_id", "created_at"],
        postgresql_where=sa.text(_UNFINISHED),
        sqlite_where=sa.text(_UNFINISHED),
    )


def downgrade() -> None:
    op.drop_index("ix_runs_unfinished_conversation", table_name="runs")
