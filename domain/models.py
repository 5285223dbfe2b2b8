"""ORM models. Every row that belongs to someone carries `user_id`, and every index starts with it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from domain.text import UnstorableText, unstorable_reason

# SQLite only auto-increments an `INTEGER PRIMARY KEY`; PostgreSQL gets a real bigint.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class StoredText(TypeDecorator[str]):
    """A text column that refuses, on every write and lookup, what the database could not store.

    PostgreSQL fails on NUL and on over-long values deep inside a statement, and SQLite stores
    either without a word; this makes both databases refuse them alike, as bad input.
    """

    impl: type[String] = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is not None:
            reason = unstorable_reason(value, max_chars=getattr(self.impl_instance, "length", None))
            if reason is not None:
                raise UnstorableText(f"text {reason}")
        return value


class StoredString(StoredText):
    """`StoredText` with a length limit, as a `VARCHAR(length)`."""

    impl = String
    cache_ok = True


def _text(length: int | None = None) -> StoredText:
    return StoredText() if length is None else StoredString(length)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class Conversation(Base):
    """A user's conversation. `key` is the opaque id clients see; it is unique per user only."""

    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint("user_id", "key", name="uq_conversations_user_key"),
        Index("ix_conversations_user_updated", "user_id", "updated_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(_text(255))
    key: Mapped[str] = mapped_column(_text(255))
    title: Mapped[str | None] = mapped_column(_text(255), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Message(Base):
    """One stored turn. `item_id` is a stable, globally unique name that makes writes idempotent."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_user_conversation_id", "user_id", "conversation_id", "id"),
        Index("ix_messages_run", "run_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(_text(64), unique=True)
    user_id: Mapped[str] = mapped_column(_text(255))
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    run_id: Mapped[str | None] = mapped_column(_text(64), default=None)
    role: Mapped[str] = mapped_column(_text(16))
    content: Mapped[str] = mapped_column(_text(), default="")
    # A message with images, audio or files keeps all its parts as the client sent them (`content` keeps
    # their text, for listings); the model is given the parts.
    parts: Mapped[list[Any] | None] = mapped_column(default=None)
    # Assistant messages that called client-side tools keep the calls; `tool` messages name the call.
    tool_calls: Mapped[list[Any] | None] = mapped_column(default=None)
    tool_call_id: Mapped[str | None] = mapped_column(_text(255), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


RunStatus = Literal["queued", "running", "awaiting_approval", "succeeded", "failed", "cancelled"]
# Runs a worker has or will have: queued, or running under a lease. A run awaiting approval has neither,
# until a person decides; see `domain/approvals.py`.
UNFINISHED: tuple[RunStatus, ...] = ("queued", "running")
FINISHED: tuple[RunStatus, ...] = ("succeeded", "failed", "cancelled")


class Run(Base):
    """One accepted request to an assistant, from enqueue to its final state; the truth about it.

    Its state only moves forward (queued, running, then succeeded, failed or cancelled). Each claim by
    a worker starts a new `attempt`, which fences every write that attempt makes, and holds a lease
    until `lease_expires_at` that the worker renews; a run whose lease lapsed is given a new attempt.
    `spec` is what its model is given beyond the stored history, so the run can be queued again
    from here alone when Redis lost its job.
    """

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_user_created", "user_id", "created_at"),
        UniqueConstraint("user_id", "idempotency_key", name="uq_runs_user_idempotency_key"),
        # Only unfinished runs are in these, so the reconciler's scans and the per-user cap stay cheap
        # however many runs have finished.
        Index(
            "ix_runs_unfinished_created",
            "created_at",
            postgresql_where=text("status IN ('queued', 'running')"),
            sqlite_where=text("status IN ('queued', 'running')"),
        ),
        Index(
            "ix_runs_unfinished_user",
            "user_id",
            postgresql_where=text("status IN ('queued', 'running')"),
            sqlite_where=text("status IN ('queued', 'running')"),
        ),
        # A claim asks whether an earlier turn of its conversation is unfinished; a finished turn asks
        # for the next queued one.
        Index(
            "ix_runs_unfinished_conversation",
            "conversation_id",
            "created_at",
            postgresql_where=text("status IN ('queued', 'running')"),
            sqlite_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[str] = mapped_column(_text(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(_text(255))
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), default=None
    )
    assistant: Mapped[str] = mapped_column(_text(64))
    status: Mapped[str] = mapped_column(_text(32), default="queued")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    request_id: Mapped[str | None] = mapped_column(_text(128), default=None)
    spec: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    idempotency_key: Mapped[str | None] = mapped_column(_text(255), default=None)
    # A digest of the request an idempotency key was first used with: the same key with another body is refused.
    request_hash: Mapped[str | None] = mapped_column(_text(64), default=None)
    # Why it failed: a `RunFailureCode`, and a message for people.
    error_code: Mapped[str | None] = mapped_column(_text(32), default=None)
    error: Mapped[str | None] = mapped_column(_text(), default=None)
    usage: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    # Set when someone asks to stop the run: recorded first, then delivered to its worker.
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    # While it awaits approval: what its agent had done, to go on from there (the engine's own form).
    paused_state: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # Attempts spent before its last pause: a run that waited for a person gets its retries afresh.
    attempts_before_pause: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When it last went on after a pause: its time limit counts from here, not from its creation.
    resumed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class Approval(Base):
    """A tool call a run stopped at, waiting for its owner's yes or no.

    The decision binds to the call id and to a digest of the arguments the model gave, so no client can
    change what was approved. `decision` is None while pending, then `approve`, `deny` or `expired`.
    """

    __tablename__ = "approvals"
    __table_args__ = (
        UniqueConstraint("run_id", "call_id", name="uq_approvals_run_call"),
        Index("ix_approvals_user_run", "user_id", "run_id"),
        Index(
            "ix_approvals_pending_expiry",
            "expires_at",
            postgresql_where=text("decision IS NULL"),
            sqlite_where=text("decision IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(_text(255))
    call_id: Mapped[str] = mapped_column(_text(255))
    tool: Mapped[str] = mapped_column(_text(255))
    arguments: Mapped[dict[str, Any]] = mapped_column()
    arguments_hash: Mapped[str] = mapped_column(_text(64))
    decision: Mapped[str | None] = mapped_column(_text(16), default=None)
    reason: Mapped[str | None] = mapped_column(_text(), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class Task(Base):
    """A todo. `number` is the id the user sees: their own 1, 2, 3…, never reused after a delete."""

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("user_id", "number", name="uq_tasks_user_number"),
        Index("ix_tasks_user_completed_number", "user_id", "completed", "number"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(_text(255))
    number: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(_text(200))
    description: Mapped[str | None] = mapped_column(_text(), default=None)
    completed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TaskSequence(Base):
    """The last task number handed to each user, so numbers stay unique after deletes and races."""

    __tablename__ = "task_sequences"

    user_id: Mapped[str] = mapped_column(_text(255), primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer, default=0)


class ToolCall(Base):
    """A server-side tool call of a run, with its result.

    Written in the same transaction as the call's effect, keyed by (run, ordinal): a retried attempt
    that makes the same call again gets the recorded result instead of doing it twice.
    """

    __tablename__ = "tool_calls"
    __table_args__ = (
        UniqueConstraint("run_id", "ordinal", name="uq_tool_calls_run_ordinal"),
        Index("ix_tool_calls_user_conversation_id", "user_id", "conversation_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(_text(255))
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), default=None
    )
    run_id: Mapped[str | None] = mapped_column(_text(64), default=None)
    ordinal: Mapped[int | None] = mapped_column(Integer, default=None)
    call_id: Mapped[str | None] = mapped_column(_text(255), default=None)
    tool_name: Mapped[str] = mapped_column(_text(64))
    arguments: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[Any] = mapped_column(JSON, nullable=True, default=None)
    is_error: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
