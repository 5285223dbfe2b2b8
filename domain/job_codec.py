"""How jobs are written to Redis, agreed by the API that enqueues and the workers that run them."""

from __future__ import annotations

import json
from typing import Any

CHAT_JOB = "run_chat"
# The payload's entry for the W3C trace context (`traceparent`, `tracestate`) of the span that enqueued
# the job, when traces are on: the worker's span for the run is its child, in the same trace.
TRACE_CONTEXT = "trace_context"


def serialize_job(data: Any) -> bytes:
    # JSON, not arq's default pickle: whoever can write to Redis must not be able to run code here.
    return json.dumps(data, default=str).encode()


def deserialize_job(raw: bytes) -> Any:
    return json.loads(raw)
