"""`switchboard runs list | show | cancel | retry`: an operator's hands on runs, across users.

`cancel` does what `POST /v1/runs/{id}/cancel` does, acting for the run's owner: the request is
recorded in the run's row first, then delivered (api/relay/cancel.py). `retry` never runs a run twice:

- a failed or cancelled run is queued again as a NEW run in the same conversation, for the same owner
  and assistant, with the same model input; its turn (the user's message, stored with the first run)
  is not written again, so the conversation reads as one question and one answer. It is refused when
  that would not be the same question: the run is outside any conversation (its input was forgotten
  when it ended), a later turn of its conversation exists (the new run would see it), or the run kept
  a partial answer. Retrying the same run twice names the first retry instead of making another.
- a queued run whose job is missing from Redis (Redis lost it) gets its job back under its own id,
  which arq never runs twice; one whose job is there is left alone.
- a running run, one awaiting approval, or one that succeeded is refused, saying why.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from arq.constants import job_key_prefix
from redis.exceptions import RedisError

from api.relay.enqueue import JobEnqueuer
from domain import admission, approvals, keys, run_admin, runs
from domain.database import unavailable_on_connection_errors
from domain.errors import ServiceUnavailable
from domain.event_log import EventLog
from domain.events import RunCancelled
from domain.job_codec import CHAT_JOB, serialize_job
from domain.run_request import RunRequest
from domain.settings import Settings
from switchboard._backends import (
    EXIT_FAILED,
    Backends,
    connected,
    say_error,
    unreachable_database,
    unreachable_redis,
)


class Refused(Exception):
    """The run cannot be acted on as asked; the message says why, for the operator."""


def run_command(settings: Settings, action: str, **options: Any) -> int:
    commands = {"list": _list, "show": _show, "cancel": _cancel, "retry": _retry}
    return asyncio.run(_guarded(settings, commands[action], options))


async def _guarded(settings: Settings, command: Any, options: dict[str, Any]) -> int:
    async with connected(settings) as backends:
        try:
            await command(settings, backends, **options)
        except ServiceUnavailable as exc:
            say_error(unreachable_database(settings, exc))
            return EXIT_FAILED
        except Refused as exc:
            say_error(str(exc))
            return EXIT_FAILED
    return 0


# ------------------------------------------------------------------ reading


def _plain(view: run_admin.AdminRunView) -> dict[str, Any]:
    data = asdict(view)
    for name, value in data.items():
        if isinstance(value, datetime):
            data[name] = _utc(value).isoformat()
    del data["conversation_id"]  # the row id; operators know conversations by key
    return data


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else _utc(moment).strftime("%Y-%m-%d %H:%M:%S")


async def _list(
    settings: Settings, backends: Backends, *, user: str | None, status: str | None, limit: int, as_json: bool
) -> None:
    async with unavailable_on_connection_errors(), backends.db_engine.connect() as connection:
        views = await run_admin.list_runs(connection, user_id=user, status=status, limit=limit)
    if as_json:
        print(json.dumps([_plain(view) for view in views], indent=2))
        return
    if not views:
        print("no runs")
        return
    header = ("RUN", "STATUS", "USER", "ASSISTANT", "CREATED (UTC)", "ATTEMPT", "ERROR")
    rows: list[tuple[str, ...]] = [
        (
            view.id,
            view.status,
            view.user_id,
            view.assistant,
            _when(view.created_at),
            str(view.attempt),
            view.error_code or "",
        )
        for view in views
    ]
    widths = [max(len(row[index]) for row in (header, *rows)) for index in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


async def _show(settings: Settings, backends: Backends, *, run_id: str, as_json: bool) -> None:
    async with unavailable_on_connection_errors(), backends.db_engine.connect() as connection:
        view = await run_admin.get(connection, run_id)
        if view is None:
            raise Refused(f"no run {run_id}")
        pending = await approvals.pending(connection, run_id=run_id)
    if as_json:
        print(json.dumps({**_plain(view), "pending_approvals": [call.as_dict() for call in pending]}, indent=2))
        return
    fields = [
        ("run", view.id),
        ("status", view.status),
        ("user", view.user_id),
        ("assistant", view.assistant),
        ("conversation", view.conversation_key or "- (a turn outside any conversation)"),
        ("attempt", str(view.attempt)),
        ("created", _when(view.created_at)),
        ("started", _when(view.started_at)),
        ("finished", _when(view.finished_at)),
        ("cancel asked", _when(view.cancel_requested_at)),
        ("error", f"{view.error_code}: {view.error}" if view.error_code else "-"),
    ]
    for name, value in fields:
        print(f"{name:<14}{value}")
    print(f"{'approvals':<14}{len(pending)} pending")
    for call in pending:
        arguments = json.dumps(call.arguments, ensure_ascii=False)
        print(f"  {call.call_id}  {call.tool} {arguments}  (expires {_when(call.expires_at)})")


# ------------------------------------------------------------------ cancel


async def _cancel(settings: Settings, backends: Backends, *, run_id: str) -> None:
    async with unavailable_on_connection_errors(), backends.db_engine.begin() as connection:
        view = await run_admin.get(connection, run_id)
        if view is None:
            raise Refused(f"no run {run_id}")
        # The administrator acts for the run's owner, exactly as the owner's own request would.
        row = await runs.request_cancel(connection, run_id=run_id, user_id=view.user_id)
    assert row is not None
    if view.status in ("succeeded", "failed", "cancelled"):
        print(f"{run_id}: already {view.status}; nothing to cancel")
        return
    delivered = await _deliver(settings, backends, row)
    if row.status == "cancelled":
        print(f"{run_id}: cancelled (it was {view.status})")
    else:
        how = "its worker stops it" if delivered else "its worker reads the request at its next lease renewal"
        print(f"{run_id}: asked to stop; {how}")


async def _deliver(settings: Settings, backends: Backends, row: Any) -> bool:
    """What api/relay/cancel.py `deliver_cancels` does; False when Redis could not be told (the request is
    recorded, and workers and listeners read it from the database)."""
    event_log = EventLog(backends.redis, max_events=settings.event_log_max, ttl_s=settings.event_log_ttl_s)
    try:
        if row.status == "running":
            await backends.redis.publish(keys.CANCELS, row.id)
        elif row.status == "cancelled" and row.attempt == 0:
            # It never started, so no worker will say it ended: its listeners hear it from here.
            await event_log.publish_many([RunCancelled(run_id=row.id, attempt=0)])
    except (RedisError, OSError) as exc:
        say_error(f"{unreachable_redis(settings, exc)}; the cancel is recorded in the database")
        return False
    return True


# ------------------------------------------------------------------ retry


RETRYABLE = ("failed", "cancelled")


async def _retry(settings: Settings, backends: Backends, *, run_id: str) -> None:
    try:
        await backends.redis.ping()
    except (RedisError, OSError) as exc:
        # Checked before anything is written: a retry that cannot be handed to a worker is not made.
        raise Refused(unreachable_redis(settings, exc)) from exc
    async with unavailable_on_connection_errors(), backends.db_engine.connect() as connection:
        view = await run_admin.get(connection, run_id)
    if view is None:
        raise Refused(f"no run {run_id}")
    if view.status == "queued":
        await _requeue(backends, view)
        return
    if view.status not in RETRYABLE:
        reasons = {
            "running": "it is running; cancel it first if it is stuck",
            "awaiting_approval": "it is waiting for its owner to approve a tool call (see `switchboard runs show`)",
            "succeeded": "it succeeded",
        }
        raise Refused(f"{run_id} is not retried: {reasons.get(view.status, view.status)}")
    new_id = await _retry_as_new_run(backends, view)
    await _enqueue(backends, new_id)
    print(f"{run_id}: retried as {new_id} (queued, conversation {view.conversation_key})")


async def _requeue(backends: Backends, view: run_admin.AdminRunView) -> None:
    async with unavailable_on_connection_errors(), backends.db_engine.connect() as connection:
        waiting = await run_admin.waits_for_earlier_turn(connection, view.id)
    if waiting:
        print(f"{view.id}: queued behind an earlier turn of its conversation; it is queued when that one ends")
        return
    if await backends.redis.exists(job_key_prefix + view.id):
        print(f"{view.id}: queued, and its job is in Redis; nothing to do")
        return
    await _enqueue(backends, view.id)
    print(f"{view.id}: its job was missing from Redis; queued it again")


async def _enqueue(backends: Backends, run_id: str) -> None:
    enqueuer = JobEnqueuer(backends.redis, serializer=serialize_job)
    try:
        await enqueuer.enqueue(CHAT_JOB, job_id=run_id, payload={"run_id": run_id})
    except ServiceUnavailable as exc:
        # The run is recorded as queued: the workers' reconciler queues its job once Redis is back.
        raise Refused(f"{run_id} is recorded but could not be queued: Redis is unreachable ({exc.__cause__})") from exc


async def _retry_as_new_run(backends: Backends, view: run_admin.AdminRunView) -> str:
    # One key per retried run: retrying it twice finds the first retry, and two operators retrying it
    # at the same moment make one run between them (the key is unique per user).
    idempotency = admission.IdempotencyKey(
        key=f"switchboard-retry:{view.id}", request_hash=hashlib.sha256(view.id.encode()).hexdigest()
    )
    try:
        async with unavailable_on_connection_errors(), backends.db_engine.begin() as connection:
            earlier = await admission.earlier_run(connection, user_id=view.user_id, idempotency=idempotency)
            if earlier is not None:
                raise Refused(f"{view.id} was retried already, as {earlier.run_id}")
            if view.conversation_key is None:
                raise Refused(
                    f"{view.id} is not retried: it was a turn outside any conversation, whose input is not kept"
                )
            later = await run_admin.later_turn(connection, view)
            if later is not None:
                raise Refused(
                    f"{view.id} is not retried: {later} came after it in its conversation, "
                    "and a new run would see that turn"
                )
            if await run_admin.has_answer(connection, view.id):
                raise Refused(f"{view.id} is not retried: it kept a partial answer; send the question again instead")
            model_input = await run_admin.stored_input(connection, view.id)
            if model_input is None:
                raise Refused(f"{view.id} is not retried: its input is no longer stored")
            request = RunRequest(
                **model_input,
                user_id=view.user_id,
                assistant=view.assistant,
                request_id=f"retry-{uuid.uuid4().hex}",
                conversation_key=view.conversation_key,
            )
            accepted = await runs.accept(connection, request, idempotency=idempotency)
    except admission.KeyTaken as exc:
        raise Refused(f"{view.id} is being retried by someone else right now; see `switchboard runs list`") from exc
    return accepted.run_id
