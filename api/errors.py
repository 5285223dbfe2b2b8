"""The one place where errors become HTTP responses, in OpenAI's error shape."""

from __future__ import annotations

from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from domain.errors import (
    AuthenticationFailed,
    ConfigurationError,
    Conflict,
    InvalidRequest,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PermissionDenied,
    RunFailure,
    RunFailureCode,
    ServiceUnavailable,
    SwitchboardError,
    Unprocessable,
)

log = structlog.get_logger("switchboard.api")

# Walked in order; the first class the error is an instance of decides its status and OpenAI type.
_STATUS: list[tuple[type[SwitchboardError], int, str]] = [
    (InvalidRequest, 400, "invalid_request_error"),
    (AuthenticationFailed, 401, "authentication_error"),
    (PermissionDenied, 403, "permission_error"),
    (NotFound, 404, "invalid_request_error"),
    (Conflict, 409, "invalid_request_error"),
    (Unprocessable, 422, "invalid_request_error"),
    (PayloadTooLarge, 413, "invalid_request_error"),
    (Overloaded, 429, "rate_limit_error"),
    (ServiceUnavailable, 503, "service_unavailable_error"),
    (ConfigurationError, 500, "server_error"),
]

# A failed run, told to a client that waited for its outcome: each failure code's status and type.
RUN_FAILURE_STATUS: dict[RunFailureCode, tuple[int, str]] = {
    "provider_error": (502, "upstream_error"),
    "provider_rejected": (400, "invalid_request_error"),
    "provider_timeout": (504, "timeout_error"),
    "run_timeout": (504, "timeout_error"),
    "service_unavailable": (503, "service_unavailable_error"),
    "worker_lost": (503, "service_unavailable_error"),
    "internal_error": (500, "server_error"),
}
SERVER_ERROR = (500, "server_error")
DEFAULT_RETRY_AFTER_S = "5"


def error_body(message: str, *, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def status_of(exc: SwitchboardError) -> tuple[int, str]:
    if isinstance(exc, RunFailure):
        return RUN_FAILURE_STATUS.get(exc.code, SERVER_ERROR)
    return next(((status, type_) for cls, status, type_ in _STATUS if isinstance(exc, cls)), SERVER_ERROR)


def error_response(exc: SwitchboardError) -> JSONResponse:
    status, type_ = status_of(exc)
    headers = exc.headers
    if status in (429, 503) and "Retry-After" not in headers:
        # A refusal that will pass, whatever raised it (a run that failed for want of a worker, say).
        headers = {"Retry-After": DEFAULT_RETRY_AFTER_S, **headers}
    return JSONResponse(
        error_body(exc.message, type_=type_, code=exc.code, param=exc.param), status_code=status, headers=headers
    )


async def handle_switchboard_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SwitchboardError)  # registered for this class only
    if isinstance(exc, ServiceUnavailable) and exc.dependency is not None:
        # Absent only for an app built without its lifespan.
        state = getattr(request.state, "app", None)
        if state is not None:
            state.metrics.dependency_errors.labels(exc.dependency).inc()
    return error_response(exc)


async def handle_http_exception(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # registered for this class only
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return JSONResponse(
        error_body(str(exc.detail), type_="invalid_request_error", code=code),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    # This runs outside the request-id middleware, whose log context is gone by now: name the request here.
    request_id = getattr(request.state, "request_id", None)
    log.exception("request.crashed", error_type=type(exc).__name__, request_id=request_id)
    return JSONResponse(
        error_body("internal server error", type_="server_error", code="internal_error"),
        status_code=500,
        headers={"X-Request-ID": request_id} if request_id else None,
    )
