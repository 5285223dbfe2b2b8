"""`GET /v1/chat/completions/{completion_id}/stream`: the rest of a streamed completion, after a
disconnect, from any API process.

A completion is its run (`chatcmpl-<hex>` is `run_<hex>`). With `Last-Event-ID: N` (the `id:` of the
last chunk the client got) or `?after=N`, the stream goes on after that event in the same chunk format:
the same `id`, `created` and `model`, no second role delta, `[DONE]` at the end. Without either, it
starts from the beginning. Another user's completion is 404, like a missing one.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
from starlette.requests import Request
from starlette.responses import Response

from api.openai.chat_completions import stream_chunks
from api.openai.chunks import ChunkWriter
from api.relay.follow import follow_run
from api.relay.sse import event_stream, resume_after
from api.state import AppState
from domain import run_views
from domain.run_views import unix_seconds


async def resume_completion(request: Request) -> Response:
    state: AppState = request.state.app
    user_id = await state.authenticator.authenticate(request.headers)
    completion_id = request.path_params["completion_id"]
    after = resume_after(request)
    run = await run_views.find_by_public_id(
        state.db_engine, completion_id, prefix="chatcmpl-", user_id=user_id, kind="completion", param="completion_id"
    )
    writer = ChunkWriter(
        completion_id=completion_id, created=unix_seconds(run.created_at) or 0, model=run.assistant, role_sent=after > 0
    )
    shutdown = anyio.Event()
    stack = contextlib.AsyncExitStack()
    async with stack:
        subscription = await stack.enter_async_context(state.hub.subscribe(run.id))
        await subscription.ready()
        progress = follow_run(state, subscription, stop=shutdown, from_start=True, after=after)
        stream = _chunks(stack.pop_all(), stream_chunks(progress, writer, include_usage=False, run_id=run.id))
    return event_stream(
        stream,
        settings=state.settings,
        shutdown=shutdown,
        headers={"X-Run-ID": run.id},
        open_streams=state.metrics.open_streams,
    )


async def _chunks(
    cleanup: contextlib.AsyncExitStack, chunks: AsyncIterator[dict[str, str]]
) -> AsyncIterator[dict[str, str]]:
    async with cleanup:
        async for chunk in chunks:
            yield chunk
