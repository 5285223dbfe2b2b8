"""The Server-Sent Events response every streaming surface answers with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import anyio
from sse_starlette import EventSourceResponse

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
