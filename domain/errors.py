"""One error family for the whole service.

`api/` maps these to HTTP statuses in one place; workers map them to `run.failed` events. Foreign
errors (Redis, SQLAlchemy, provider SDKs) are translated into these at the edge, with `from e`.

Like Starlette's `HTTPException`, an error carries the headers its response needs (`Retry-After`
for a refusal that will pass, `WWW-Authenticate` for missing credentials), so no route has to
remember them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import ValidationError

# Why a run failed: a closed set, stored in the run's `error_code` column and sent in `run.failed`.
RunFailureCode = Literal[
    "provider_error",  # the model provider answered with an error or could not be reached
    "provider_rejected",  # the model provider refused what the client sent (its HTTP 400): the client's to fix
    "provider_timeout",  # the model provider did not answer in time
    "run_timeout",  # the run went past SWITCHBOARD_RUN_TIMEOUT_S
    "service_unavailable",  # the turn was stored, but the job could not be handed to a worker
    "worker_lost",  # every attempt's worker died (SWITCHBOARD_RUN_MAX_ATTEMPTS of them)
    "internal_error",  # a bug: the run crashed
]

# Why a stream ended before its run did. The run goes on, or its outcome is stored.
StreamEndCode = Literal["server_shutdown", "run_restarted", "stream_interrupted"]


class SwitchboardError(Exception):
    """Base of every error this service raises on purpose."""

    code: str = "internal_error"
    default_headers: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = {**self.default_headers, **(headers or {})}


class ConfigurationError(SwitchboardError):
    """A setting is missing or wrong; raised at start-up, reported as one line."""

    code = "configuration_error"


class InvalidRequest(SwitchboardError):
    """The caller sent something we cannot accept."""

    code = "invalid_request"


class Unprocessable(SwitchboardError):
    """Well-formed JSON whose content does not fit the endpoint's schema (the todo API's 422)."""

    code = "validation_error"


class AuthenticationFailed(SwitchboardError):
    code = "invalid_api_key"
    default_headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": "Bearer"}


class PermissionDenied(SwitchboardError):
    code = "permission_denied"


class Conflict(SwitchboardError):
    """The request clashes with the state of what it names (a conversation busy with another turn)."""

    code = "conflict"


class NotFound(SwitchboardError):
    """Missing, or owned by someone else: the two are deliberately indistinguishable."""

    code = "not_found"


class PayloadTooLarge(SwitchboardError):
    code = "payload_too_large"


class Overloaded(SwitchboardError):
    code = "overloaded"
    default_headers: ClassVar[Mapping[str, str]] = {"Retry-After": "1"}


class ServiceUnavailable(SwitchboardError):
    """Redis or the database cannot be reached."""

    code = "service_unavailable"
    default_headers: ClassVar[Mapping[str, str]] = {"Retry-After": "5"}
    # Which one, for `switchboard_dependency_errors_total`; None when it is neither (a shutdown, say).
    dependency: ClassVar[Literal["database", "redis"] | None] = None


class DatabaseUnavailable(ServiceUnavailable):
    dependency = "database"


class RedisUnavailable(ServiceUnavailable):
    dependency = "redis"


class RunFailure(SwitchboardError):
    """A run ended in failure; `code` says why, from the closed set `RunFailureCode`."""

    code: RunFailureCode

    def __init__(self, message: str, *, code: RunFailureCode | None = None) -> None:
        super().__init__(message, code=code)


class ProviderError(RunFailure):
    """The model provider answered with an error or could not be reached."""

    code = "provider_error"


class ProviderTimeout(RunFailure):
    code = "provider_timeout"


_NO_INPUT = object()


def first_problem(exc: ValidationError, data: Any = _NO_INPUT) -> tuple[str | None, str]:
    """(where, what) of a pydantic validation failure, for a one-line message.

    Given the input `data`, a union's failure reads as the client's mistake rather than the validator's
    internals: pydantic reports an error from every branch of a union, each under the branch's label
    (`function-after[_storable(), str]`, `list[str]`), and the branch that got deepest into the input is the
    one the client meant. Labels name no place in the input, so `where` leaves them out; branches that failed
    at the same depth are told together ("a string, or a list").
    """
    errors = exc.errors()
    if data is _NO_INPUT:
        error = errors[0]
        return ".".join(str(part) for part in error["loc"]) or None, _message(error["msg"])
    placed = [(_place_in(data, error["loc"], missing=error["type"] == "missing"), error) for error in errors]
    deepest = max(len(place) for place, _ in placed)
    where = next(place for place, _ in placed if len(place) == deepest)
    messages = list(dict.fromkeys(_message(error["msg"]) for place, error in placed if place == where))
    what = messages[0] + "".join(f", or {message[:1].lower()}{message[1:]}" for message in messages[1:])
    return ".".join(str(part) for part in where) or None, what


def _message(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _place_in(data: Any, loc: tuple[int | str, ...], *, missing: bool) -> tuple[int | str, ...]:
    """The parts of an error's `loc` that are places in `data` (keys, indexes), without union labels."""
    place: list[int | str] = []
    value = data
    for position, part in enumerate(loc):
        index = part if isinstance(part, int) else -1
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and 0 <= index < len(value):
            value = value[index]
        elif not (missing and position == len(loc) - 1):
            continue  # a union branch's label
        place.append(part)
    return tuple(place)
