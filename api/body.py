"""Reading a JSON request body without trusting its size or its syntax."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from domain.errors import InvalidRequest, PayloadTooLarge

ModelT = TypeVar("ModelT", bound=BaseModel)
# Deep enough for any real JSON schema of a tool; shallow enough that nothing downstream recurses far.
MAX_NESTING = 64


async def read_json(request: Request, *, max_bytes: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest(f"request body is nested deeper than {MAX_NESTING} levels") from None
    if _depth_exceeds(data, MAX_NESTING):
        raise InvalidRequest(f"request body is nested deeper than {MAX_NESTING} levels")
    return data


def _depth_exceeds(data: Any, limit: int) -> bool:
    """Whether JSON nests deeper than `limit`; iterative, so a hostile body cannot exhaust the stack."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def validate(model: type[ModelT], data: Any) -> ModelT:
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = ".".join(str(part) for part in error["loc"]) or None
        message = str(error["msg"]).removeprefix("Value error, ")
        raise InvalidRequest(f"{param}: {message}" if param else message, param=param) from None
