"""runs that wait for a person's approval of tool calls: the state, what the agent had done, the calls

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        # `awaiting_approval` is longer than the 16 characters the column took.
        batch.alter_column("status", type_=sa.String(32), existing_type=sa.String(16))
        batch.add_column(sa.Column("paused_state", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("attempts_before_pause", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("resumed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "approvals",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("call_id", sa.String(255), nullable=False),
        sa.Column("tool", sa.String(255), nullable=False),
        sa.Column("arguments", sa.JSON(), nullable=False),
        sa.Column("arguments_hash", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("run_id", "call_id", name="uq_approvals_run_call"),
    )
    op.create_index("ix_approvals_user_run", "approvals", ["user_id", "run_id"])
    op.create_index(
        "ix_approvals_pending_expiry",
        "approvals",
        ["expires_at"],
        postgresql_where=sa.text("decision IS NULL"),
        sqlite_where=sa.text("decision IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_approvals_pending_expiry", table_name="approvals")
    op.drop_index("ix_approvals_user_run", table_name="approvals")
    op.drop_table("approvals")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("resumed_at")
        batch.drop_column("attempts_before_pause")
        batch.drop_column("paused_state")
        batch.alter_column("status", type_=sa.String(16), existing_type=sa.String(32))
