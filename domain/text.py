"""Text the database can store, checked in one place.

JSON and URLs can carry what no database column holds: PostgreSQL refuses NUL in text, and an
unpaired surrogate (`"\\ud800"` decodes from JSON) is not Unicode at all, so encoding it fails. Input
is checked against these rules where it arrives (the request body, ids in paths and headers), so the
client hears which field is wrong; the column types of `domain/models.py` check again on every write
and lookup, so nothing unstorable reaches the database whichever way it came. What a model writes is
not the client's mistake: `scrub` makes it storable instead.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from domain.errors import InvalidRequest

REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class UnstorableText(InvalidRequest):
    """Text that no column can hold: bad input, whichever layer finds it."""


def unstorable_reason(value: str, *, max_chars: int | None = None) -> str | None:
    """Why `value` cannot be stored, or None when it can."""
    if "\x00" in value:
        return "must not contain NUL characters"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must be valid Unicode (it contains an unpaired surrogate)"
    if max_chars is not None and len(value) > max_chars:
        return f"must be at most {max_chars} characters long"
    return None


def check_storable(value: str, *, param: str, max_chars: int | None = None) -> str:
    """`value`, or `UnstorableText` (a 400) naming `param`."""
    reason = unstorable_reason(value, max_chars=max_chars)
    if reason is not None:
        raise UnstorableText(f"{param} {reason}", param=param)
    return value


def scrub(value: str) -> str:
    """`value` with NUL and unpaired surrogates replaced by U+FFFD, for text nobody can be asked to fix."""
    if unstorable_reason(value) is None:
        return value
    # Python's decoders pair surrogates as they read, so any surrogate left in a `str` is unpaired.
    return _UNSTORABLE.sub(REPLACEMENT, value)


def _storable(value: str) -> str:
    reason = unstorable_reason(value)
    if reason is not None:
        raise ValueError(f"text {reason}")
    return value


StorableText = Annotated[str, AfterValidator(_storable)]
"""A string field of a wire model whose value will be stored."""
