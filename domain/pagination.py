"""Opaque cursors for lists that grow: the client hands back what it was given, nothing more."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from domain.errors import InvalidRequest
from domain.text import unstorable_reason

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
# The largest id a BIGINT column holds; a cursor's number past it could only fail in the database.
MAX_ID = 2**63 - 1
# No text part of a cursor (a time, an id) is longer than the longest id column.
MAX_TEXT_PART = 255


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *kinds: type[int] | type[str] | type[datetime], param: str = "cursor") -> list[Any]:
    """The parts of a cursor made by `encode_cursor`, one of each of `kinds` (datetimes as ISO text).

    Anyone can write a cursor, so whatever it holds is a 400 unless it has exactly this shape: a part
    of the wrong type, an id past what a database column holds, text no database stores.
    """
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded.encode()), parse_constant=_refuse, parse_float=_refuse)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _foreign(param) from exc
    if not isinstance(parts, list) or len(parts) != len(kinds):
        raise _foreign(param)
    decoded = [_part(part, kind) for part, kind in zip(parts, kinds, strict=True)]
    if any(part is None for part in decoded):
        raise _foreign(param)
    return decoded


def decode_position(cursor: str, *, id_type: type[int] | type[str], param: str = "cursor") -> tuple[datetime, Any]:
    """A `(time, id)` keyset position from a cursor made by `encode_cursor(time.isoformat(), id)`."""
    moment, key = decode_cursor(cursor, datetime, id_type, param=param)
    return moment, key


def parse_whole_number(raw: str, *, param: str, minimum: int = 0, maximum: int = MAX_ID) -> int:
    """A whole number written in ASCII digits, from `minimum` to `maximum`; anything else is a 400.

    `str.isdigit()` alone is not enough: it takes "²", which `int()` then refuses.
    """
    text = raw.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(maximum))) or not (
        minimum <= int(text) <= maximum
    ):
        raise InvalidRequest(f"{param} must be a whole number from {minimum} to {maximum}", param=param)
    return int(text)


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    return parse_whole_number(raw, param="limit", minimum=1, maximum=MAX_LIMIT)


def _part(part: Any, kind: type[int] | type[str] | type[datetime]) -> Any:
    """`part` as `kind`, or None when it is not one."""
    if kind is int:
        valid = isinstance(part, int) and not isinstance(part, bool) and -MAX_ID <= part <= MAX_ID
        return part if valid else None
    if not isinstance(part, str) or unstorable_reason(part, max_chars=MAX_TEXT_PART) is not None:
        return None
    if kind is str:
        return part
    try:
        return datetime.fromisoformat(part)
    except ValueError:
        return None


def _refuse(literal: str) -> Any:
    raise ValueError(f"{literal} has no place in a cursor")


def _foreign(param: str) -> InvalidRequest:
    return InvalidRequest("cursor is not one this server gave out", param=param)
