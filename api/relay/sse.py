"""The Server-Sent Events response every streaming surface answers with."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping

import anyio
import structlog
from prometheus_client import Gauge
from sse_starlette import EventSourceResponse
from starlette.requests import Request

from api.errors import error_body
from domain.pagination import parse_whole_number
from domain.settings import Settings

log = structlog.get_logger("switchboard.api")

# How long a stream gets to say goodbye (an error event, `[DONE]`) once the server starts shutting down.
SHUTDOWN_GRACE_S = 2.0


def event_stream(
    events: AsyncIterator[dict[str, str]] | AsyncIterator[bytes],
    *,
    settings: Settings,
    shutdown: anyio.Event,
    headers: Mapping[str, str] | None = None,
    open_streams: Gauge | None = None,
) -> EventSourceResponse:
    """Keep-alive comments every `keepalive_s`; `shutdown` is set when the server begins to stop;
    `open_streams` (`switchboard_open_streams`) counts the stream while it is being served."""
    return EventSourceResponse(
        _ending_in_an_error_if_it_crashes(events, open_streams),
        headers=dict(headers or {}),
        ping=settings.keepalive_s,
        sep="\n",
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_S,
    )


async def _ending_in_an_error_if_it_crashes(
    events: AsyncIterator[dict[str, str]] | AsyncIterator[bytes], open_streams: Gauge | None
) -> AsyncIterator[dict[str, str] | bytes]:
    """The stream, and if it raises, an `error` event in our error shape before it ends.

    Each surface ends its streams with a terminal event of its own; an exception that escapes one is a
    bug, logged as one, but the client still hears that its stream is over and did not just drop.
    """
    if open_streams is not None:
        open_streams.inc()
    try:
        async for event in events:
            yield event
    except Exception as exc:
        log.exception("stream.crashed", error_type=type(exc).__name__)
        body = error_body("internal server error", type_="server_error", code="internal_error")
        yield {"event": "error", "data": json.dumps(body)}
    finally:
        # Also when the client went away: the server cancels the stream, or closes this generator.
        if open_streams is not None:
            open_streams.dec()


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
