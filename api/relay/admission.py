"""Admission at the door of every surface that starts runs: the queue's depth, and the `Idempotency-Key`
header. The rest of admission (the per-user cap, what a key names) is decided where the run is
recorded, in `domain.runs.accept`.

The queue's depth is read by the process's `QueueGauge` (api/relay/queue_gauge.py), at most every
half second, shared by every request.
"""

from __future__ import annotations

from typing import Any

import structlog
from starlette.requests import Request

from api.state import AppState
from domain.admission import IDEMPOTENCY_HEADER, IdempotencyKey, parse_key, request_hash

log = structlog.get_logger("switchboard.api.admission")

QUEUE_LOOK_S = 0.5


async def queue_full(state: AppState) -> bool:
    return await state.queue.depth() >= state.settings.max_queued_runs


def idempotency_key(request: Request, body: Any, **scope: str | None) -> IdempotencyKey | None:
    """The request's `Idempotency-Key`, with the digest of what it asks: its path, its JSON `body`, and
    `scope` (whatever else changes the request, like a conversation named in a header). 400 if the
    header is there but is no key."""
    value = request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    return IdempotencyKey(key=parse_key(value), request_hash=request_hash(path=request.url.path, body=body, **scope))
