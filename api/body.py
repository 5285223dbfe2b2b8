"""Reading a JSON request body without trusting its size or its syntax."""

from __future__ import annotations

import json
from typing import Any, TypeVar, overload

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request

from domain.errors import InvalidRequest, PayloadTooLarge, SwitchboardError, first_problem

ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")
# Deep enough for any real JSON schema of a tool; shallow enough that nothing downstream recurses far.
MAX_NESTING = 64


async def read_json(request: Request, *, max_bytes: int, error: type[SwitchboardError] = InvalidRequest) -> Any:
    """The body's JSON; a body that is not JSON is `error`, 400 unless the surface says otherwise."""
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
        raise error("request body is empty; expected a JSON object")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise error(f"request body is nested deeper than {MAX_NESTING} levels") from exc
    if _depth_exceeds(data, MAX_NESTING):
        raise error(f"request body is nested deeper than {MAX_NESTING} levels")
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


@overload
def validate(schema: type[ModelT], data: Any, *, error: type[SwitchboardError] = ...) -> ModelT: ...
@overload
def validate(schema: TypeAdapter[T], data: Any, *, error: type[SwitchboardError] = ...) -> T: ...
def validate(schema: Any, data: Any, *, error: type[SwitchboardError] = InvalidRequest) -> Any:
    """The body as `schema`, or `error` (400 unless the surface says otherwise) naming the first problem.

    The one place where a pydantic `ValidationError` from a request becomes ours.
    """
    if not isinstance(data, dict):
        raise error("request body must be a JSON object")
    validator = schema.validate_python if isinstance(schema, TypeAdapter) else schema.model_validate
    try:
        return validator(data)
    except ValidationError as exc:
        param, message = first_problem(exc)
        raise error(f"{param}: {message}" if param else message, param=param) from exc
