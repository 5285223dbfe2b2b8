"""`GET /v1/runs`, `GET /v1/runs/{run_id}` and `GET /v1/runs/{run_id}/events`.

The caller's runs only: another user's run is 404, exactly like one that does not exist. Times are
Unix seconds, as in OpenAI's objects. Lists are newest first and cursor-paginated: `next_cursor`,
when `has_more`, is passed back as `after`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.relay.replay import replay_run
from api.relay.sse import event_stream, resume_after
from api.state import AppState
from domain import approvals, conversations, run_views
from domain.database import unavailable_on_connection_errors
from domain.errors import NotFound
from domain.pagination import decode_position, encode_cursor, parse_limit
from domain.run_views import RunView, unix_seconds


async def _caller(request: Request) -> tuple[AppState, str]:
    state: AppState = request.state.app
    user_id = await state.authenticator.authenticate(request.headers)
    return state, user_id


async def owned_run(state: AppState, user_id: str, run_id: str) -> RunView:
    async with unavailable_on_connection_errors(), state.db_engine.connect() as connection:
        run = await run_views.get(connection, user_id=user_id, run_id=run_id)
    if run is None:
        raise NotFound(f"No run found with id '{run_id}'", param="run_id", code="run_not_found")
    return run


def run_object(run: RunView, pending: Sequence[approvals.ApprovalView] = ()) -> dict[str, Any]:
    usage = None
    if run.usage is not None:
        prompt = int(run.usage.get("prompt_tokens", 0))
        completion = int(run.usage.get("completion_tokens", 0))
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    error = None
    if run.error_code is not None or run.error is not None:
        error = {"code": run.error_code, "message": run.error}
    return {
        "id": run.id,
        "object": "run",
        "status": run.status,
        "assistant": run.assistant,
        "conversation_id": run.conversation_key,
        "created_at": unix_seconds(run.created_at),
        "started_at": unix_seconds(run.started_at),
        "finished_at": unix_seconds(run.finished_at),
        "attempt": run.attempt,
        "error": error,
        "usage": usage,
        # The tool calls it stopped at, while it awaits approval: decide each at `POST .../approvals`.
        "pending_approvals": [approval.as_dict() for approval in pending],
    }


async def get_run(request: Request) -> Response:
    state, user_id = await _caller(request)
    run = await owned_run(state, user_id, request.path_params["run_id"])
    return JSONResponse(run_object(run, await pending_approvals(state, run)))


async def pending_approvals(state: AppState, run: RunView) -> list[approvals.ApprovalView]:
    if run.status != approvals.AWAITING:
        return []
    async with unavailable_on_connection_errors(), state.db_engine.connect() as connection:
        return await approvals.pending(connection, run_id=run.id)


async def list_runs(request: Request) -> Response:
    state, user_id = await _caller(request)
    params = request.query_params
    status = run_views.parse_status(params.get("status"))
    limit = parse_limit(params.get("limit"))
    given_conversation = params.get("conversation_id")
    conversation_key = (
        conversations.parse_key(given_conversation, param="conversation_id") if given_conversation else None
    )
    cursor = params.get("after")
    after = decode_position(cursor, id_type=str, param="after") if cursor else None
    async with unavailable_on_connection_errors(), state.db_engine.connect() as connection:
        found = await run_views.list_page(
            connection,
            user_id=user_id,
            limit=limit + 1,
            conversation_key=conversation_key,
            status=status,
            after=after,
        )
    page = found[:limit]
    has_more = len(found) > limit
    last = page[-1] if page else None
    return JSONResponse(
        {
            "object": "list",
            "data": [run_object(run) for run in page],
            "has_more": has_more,
            "next_cursor": encode_cursor(last.created_at.isoformat(), last.id) if last and has_more else None,
        }
    )


async def run_events(request: Request) -> Response:
    state, user_id = await _caller(request)
    run_id = request.path_params["run_id"]
    after = resume_after(request)
    await owned_run(state, user_id, run_id)
    shutdown = anyio.Event()
    return event_stream(
        _sse(state, run_id, after, shutdown),
        settings=state.settings,
        shutdown=shutdown,
        open_streams=state.metrics.open_streams,
    )


async def _sse(state: AppState, run_id: str, after: int, shutdown: anyio.Event) -> AsyncIterator[dict[str, str]]:
    async for event in replay_run(state, run_id, after=after, stop=shutdown):
        yield {"id": str(event.seq), "event": event.type, "data": event.model_dump_json()}
