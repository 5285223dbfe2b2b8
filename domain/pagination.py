"""Opaque cursors for lists that grow: the client hands back what it was given, nothing more."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from domain.errors import InvalidRequest

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *, arity: int, param: str = "cursor") -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("cursor is not one this server gave out", param=param) from exc
    if not isinstance(parts, list) or len(parts) != arity:
        raise InvalidRequest("cursor is not one this server gave out", param=param)
    return parts


def decode_position(cursor: str, *, id_type: type[int] | type[str], param: str = "cursor") -> tuple[datetime, Any]:
    """A `(time, id)` keyset position from a cursor made by `encode_cursor(time.isoformat(), id)`."""
    moment, key = decode_cursor(cursor, arity=2, param=param)
    try:
        return datetime.fromisoformat(str(moment)), id_type(key)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidRequest("cursor is not one this server gave out", param=param) from exc


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}", param="limit")
    return int(raw)
