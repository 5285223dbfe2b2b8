"""Header values as text: HTTP carries bytes, and clients that send anything but ASCII send UTF-8.

Starlette hands header values over decoded as Latin-1, so `é` sent as UTF-8 arrives as `Ã©`, and an id
sent in a header would not match the same id sent in a body or a path. Headers that carry ids are
read here instead.
"""

from __future__ import annotations

from starlette.datastructures import Headers

from domain.errors import InvalidRequest


def text_header(headers: Headers, name: str) -> str | None:
    """The header's value decoded as UTF-8, or None when absent; bytes that are not UTF-8 are a 400."""
    value = headers.get(name)
    if value is None or value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"{name} must be UTF-8 text", param=name) from exc


def header_text(value: str) -> str:
    """`value` as Starlette must be given it to send its UTF-8 bytes: a header is Latin-1 on the way out."""
    return value if value.isascii() else value.encode("utf-8").decode("latin-1")
