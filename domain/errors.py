"""One error family for the whole service.

`api/` maps these to HTTP statuses in one place; workers map them to `run.failed` events. Foreign
errors (Redis, SQLAlchemy, provider SDKs) are translated into these at the edge, with `from e`.
"""

from __future__ import annotations


class SwitchboardError(Exception):
    """Base of every error this service raises on purpose."""

    code: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


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


class PermissionDenied(SwitchboardError):
    code = "permission_denied"


class NotFound(SwitchboardError):
    """Missing, or owned by someone else: the two are deliberately indistinguishable."""

    code = "not_found"


class PayloadTooLarge(SwitchboardError):
    code = "payload_too_large"


class Overloaded(SwitchboardError):
    code = "overloaded"


class ServiceUnavailable(SwitchboardError):
    """Redis or the database cannot be reached."""

    code = "service_unavailable"


class ProviderError(SwitchboardError):
    """The model provider answered with an error or could not be reached."""

    code = "provider_error"


class ProviderTimeout(SwitchboardError):
    code = "provider_timeout"


class RunTimeout(SwitchboardError):
    """The run went past `SWITCHBOARD_RUN_TIMEOUT_S`, or the relay heard nothing for that long."""

    code = "run_timeout"
