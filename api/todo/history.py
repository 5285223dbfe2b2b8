"""The todo API's reads and deletes: the caller's tasks, conversations and their messages.

Every list is newest-last or newest-first as a UI wants it, cursor-paginated; another user's
conversation is exactly as missing as one that never existed.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.relay.cancel import cancel_removed_runs
from api.todo.caller import caller
from domain import conversations, tasks
from domain.database import unavailable_on_connection_errors
from domain.errors import NotFound
from domain.pagination import decode_cursor, decode_position, encode_cursor, parse_limit


async def me(request: Request) -> Response:
    _, user_id = await caller(request)
    return JSONResponse({"user_id": user_id})


async def list_tasks(request: Request) -> Response:
    state, user_id = await caller(request)
    status = tasks.parse_status(request.query_params.get("status", "all"))
    limit = parse_limit(request.query_params.get("limit"))
    cursor = request.query_params.get("cursor")
    after = decode_cursor(cursor, int)[0] if cursor else None
    async with unavailable_on_connection_errors(), state.db_engine.connect() as connection:
        found = await tasks.list_tasks(
            connection,
            user_id=user_id,
            status=status,
            after_number=after,
            limit=limit + 1,
        )
    page = found[:limit]
    return JSONResponse(
        {
            "data": [task.as_dict() for task in page],
            "next_cursor": encode_cursor(page[-1].id) if len(found) > limit else None,
        }
    )


async def list_conversations(request: Request) -> Response:
    state, user_id = await caller(request)
    limit = parse_limit(request.query_params.get("limit"))
    cursor = request.query_params.get("cursor")
    after = decode_position(cursor, id_type=int) if cursor else None
    async with unavailable_on_connection_errors(), state.db_engine.connect() as connection:
        found = await conversations.list_page(connection, user_id=user_id, limit=limit + 1, after=after)
    page = found[:limit]
    last = page[-1] if page else None
    return JSONResponse(
        {
            "data": [
                {
                    "id": item.key,
                    "title": item.title,
                    "created_at": item.created_at.isoformat(),
                    "updated_at": item.updated_at.isoformat(),
                }
                for item in page
            ],
            "next_cursor": encode_cursor(last.updated_at.isoformat(), last.id) if last and len(found) > limit else None,
        }
    )


async def list_messages(request: Request) -> Response:
    state, user_id = await caller(request)
    key = conversations.parse_key(request.path_params["conversation_id"], param="conversation_id")
    limit = parse_limit(request.query_params.get("limit"))
    cursor = request.query_params.get("cursor")
    after = decode_cursor(cursor, int)[0] if cursor else None
    async with unavailable_on_connection_errors(), state.db_engine.connect() as connection:
        conversation = await conversations.get(connection, user_id=user_id, key=key)
        if conversation is None:
            raise NotFound(f"conversation '{key}' not found")
        found = await conversations.list_messages(
            connection, user_id=user_id, conversation_id=conversation.id, limit=limit + 1, after_id=after
        )
    page = found[:limit]
    return JSONResponse(
        {
            "data": [
                {
                    "id": message.id,
                    "role": message.role,
                    "content": message.content,
                    "created_at": message.created_at.isoformat(),
                    "tool_calls": message.tool_calls,
                    "run_id": message.run_id,
                }
                for message in page
            ],
            "next_cursor": encode_cursor(page[-1].id) if len(found) > limit else None,
        }
    )


async def delete_conversation(request: Request) -> Response:
    state, user_id = await caller(request)
    key = conversations.parse_key(request.path_params["conversation_id"], param="conversation_id")
    async with unavailable_on_connection_errors(), state.db_engine.begin() as connection:
        stopped = await conversations.delete(connection, user_id=user_id, key=key)
    if stopped is None:
        raise NotFound(f"conversation '{key}' not found")
    # Its turns still queued or running go with it.
    await cancel_removed_runs(state, stopped)
    return Response(status_code=204)
