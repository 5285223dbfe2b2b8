"""The Server-Sent Events response every streaming surface answers with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import anyio
from sse_starlette import EventSourceResponse
from starlette.requests import Request

from domain.pagination import parse_whole_number
from domain.settings import Settings

# How long a stream gets to say goodbye (an error event, `[DONE]`) once the server starts shutting down.
SHUTDOWN_GRACE_S = 2.0


def event_stream(
    events: AsyncIterator[dict[str, str]] | AsyncIterator[bytes],
    *,
    settings: Settings,
    shutdown: anyio.Event,
    headers: Mapping[str, str] | None = None,
) -> EventSourceResponse:
    """Keep-alive comments every `keepalive_s`; `shutdown` is set when the server begins to stop."""
    return EventSourceResponse(
        events,
        headers=dict(headers or {}),
        ping=settings.keepalive_s,
        sep="\n",
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_S,
    )


def resume_after(request: Request) -> int:
    """The event a resumed stream starts after: `Last-Event-ID` (as an EventSource resends it), else
    `?after`, else 0, the beginning."""
    for name, raw in (
        ("Last-Event-ID", request.headers.get("last-event-id")),
        ("after", request.query_params.get("after")),
    ):
        if raw is not None and raw.strip():
            return parse_whole_number(raw, param=name)
    return 0
