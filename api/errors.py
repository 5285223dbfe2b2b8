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
    InvalidRequest,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PermissionDenied,
    ProviderError,
    ProviderTimeout,
    RunTimeout,
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
    (Unprocessable, 422, "invalid_request_error"),
    (PayloadTooLarge, 413, "invalid_request_error"),
    (Overloaded, 429, "rate_limit_error"),
    (ProviderError, 502, "upstream_error"),
    (ProviderTimeout, 504, "timeout_error"),
    (RunTimeout, 504, "timeout_error"),
    (ServiceUnavailable, 503, "service_unavailable_error"),
    (ConfigurationError, 500, "server_error"),
]

# A run that failed in a worker reports a code; a non-streaming request turns it back into a status.
RUN_FAILURE_ERRORS: dict[str, type[SwitchboardError]] = {
    "provider_error": ProviderError,
    "provider_timeout": ProviderTimeout,
    "run_timeout": RunTimeout,
}


def error_body(message: str, *, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(exc: SwitchboardError, headers: dict[str, str] | None = None) -> JSONResponse:
    status, type_ = next(
        ((status, type_) for cls, status, type_ in _STATUS if isinstance(exc, cls)), (500, "server_error")
    )
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse(
        error_body(exc.message, type_=type_, code=exc.code, param=exc.param), status_code=status, headers=headers
    )


async def handle_switchboard_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SwitchboardError)
    return error_response(exc)


async def handle_http_exception(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return JSONResponse(
        error_body(str(exc.detail), type_="invalid_request_error", code=code),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def handle_unexpected(_request: Request, exc: Exception) -> Response:
    log.exception("request.crashed", error_type=type(exc).__name__)
    return JSONResponse(
        error_body("internal server error", type_="server_error", code="internal_error"), status_code=500
    )
