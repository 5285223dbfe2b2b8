"""Reading a JSON request body without trusting its size or its syntax."""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar, overload

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request

from domain.errors import InvalidRequest, PayloadTooLarge, SwitchboardError, first_problem
from domain.text import unstorable_reason

ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")
# Deep enough for any real JSON schema of a tool; shallow enough that nothing downstream recurses far.
MAX_NESTING = 64


async def read_json(request: Request, *, max_bytes: int, error: type[SwitchboardError] = InvalidRequest) -> Any:
    """The body's JSON; a body that is not JSON is `error`, 400 unless the surface says otherwise."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
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
        data = json.loads(body, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise error(f"request body is nested deeper than {MAX_NESTING} levels") from exc
    problem = _unusable(data)
    if problem is not None:
        message, param = problem
        raise error(message, param=param)
    return data


def _no_constant(name: str) -> Any:
    # Python's parser takes NaN and Infinity, which JSON has not got; nobody downstream could send them on.
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(literal: str) -> float:
    number = float(literal)
    if math.isinf(number):
        raise ValueError(f"the number {literal[:20]} is out of range")
    return number


def _unusable(data: Any) -> tuple[str, str | None] | None:
    """What makes a parsed body unusable: nesting deeper than `MAX_NESTING`, or a string (key or value)
    that is not storable text (a NUL, an unpaired surrogate). Iterative, so that a hostile body cannot
    exhaust the stack; the path it names is the one a client would look for."""
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            reason = unstorable_reason(value)
            if reason is not None:
                return f"{path or 'the body'}: text {reason}", path or None
            continue
        if isinstance(value, dict):
            items: Any = value.items()
        elif isinstance(value, list):
            items = ((f"[{index}]", child) for index, child in enumerate(value))
        else:
            continue
        if depth > MAX_NESTING:
            return f"request body is nested deeper than {MAX_NESTING} levels", None
        for key, child in items:
            if isinstance(value, dict):
                reason = unstorable_reason(key)
                if reason is not None:
                    return f"{path or 'the body'}: a key {reason}", path or None
                child_path = f"{path}.{key}" if path else key
            else:
                child_path = f"{path}{key}"
            stack.append((child, child_path, depth + 1))
    return None


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
        param, message = first_problem(exc, data)
        raise error(f"{param}: {message}" if param else message, param=param) from exc
