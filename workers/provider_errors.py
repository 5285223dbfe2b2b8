"""The model provider's failures, translated at the edge into ours, whichever SDK met them.

The general assistant meets them as PydanticAI exceptions, the todo assistant as the OpenAI SDK's
and the Agents SDK's. Either way the run fails with `provider_error` or `provider_timeout` and a
message a client may read; the provider's status and the start of its body, which may say more
than a client should see, stay on the error for the one log line the job writes.

A provider that refuses the request itself (HTTP 400 or 422: an image it cannot read, a schema it does
not take) refuses what the client sent, so the run fails with `provider_rejected`, which the client
gets as a 400 with the provider's own message: it is theirs to fix, and nobody else can tell them how.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import openai
from agents.exceptions import AgentsException, MaxTurnsExceeded
from pydantic_ai.exceptions import (
    ModelAPIError,
    ModelHTTPError,
    ModelTimeoutError,
    UnexpectedModelBehavior,
    UserError,
)

from domain.errors import ProviderError, ProviderTimeout, RunFailureCode

BODY_LOG_CHARS = 500


# Statuses with which a provider refuses the request's content rather than fails to serve it.
REJECTED_STATUSES = (400, 422)


class ProviderFailure(ProviderError):
    """A provider error with what the provider said, for the log."""

    def __init__(
        self, message: str, *, status: int | None = None, body: object = None, code: RunFailureCode | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.body = _start_of(body)


def _http_failure(status: int, body: object) -> ProviderFailure:
    if status in REJECTED_STATUSES:
        message = f"the model provider refused the request: {_provider_message(body)}"
        return ProviderFailure(message, status=status, body=body, code="provider_rejected")
    return ProviderFailure(f"the model provider answered HTTP {status}", status=status, body=body)


def _provider_message(body: object) -> str:
    """The provider's own words in an error body: OpenAI's `{"message"}` (the SDK unwraps `error`), or
    `{"error": {"message"}}` as Anthropic and others send it; else the start of the body."""
    for candidate in (body, body.get("error") if isinstance(body, dict) else None):
        if isinstance(candidate, dict) and isinstance(candidate.get("message"), str):
            return str(candidate["message"])[:BODY_LOG_CHARS]
    return _start_of(body) or "no reason given"


def _start_of(body: object) -> str | None:
    if body is None:
        return None
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return text[:BODY_LOG_CHARS]


@contextlib.contextmanager
def provider_errors(*, max_turns: int | None = None) -> Iterator[None]:
    try:
        yield
    except (ModelTimeoutError, openai.APITimeoutError) as exc:
        raise ProviderTimeout("the model provider timed out") from exc
    except ModelHTTPError as exc:
        raise _http_failure(exc.status_code, exc.body) from exc
    except openai.APIStatusError as exc:
        raise _http_failure(exc.status_code, exc.body) from exc
    except openai.APIConnectionError as exc:
        raise ProviderFailure("the model provider could not be reached") from exc
    except UserError as exc:
        # PydanticAI's model adapters refuse, before sending anything, input their API cannot express (a
        # document kind a provider does not take, say): the client's request, refused by the model's side.
        message = f"the model provider cannot take this request: {exc}"
        raise ProviderFailure(message, body=str(exc), code="provider_rejected") from exc
    except MaxTurnsExceeded as exc:
        raise ProviderFailure(f"the model made more than {max_turns} steps without answering") from exc
    except (ModelAPIError, UnexpectedModelBehavior, AgentsException) as exc:
        raise ProviderFailure(f"the model provider failed: {type(exc).__name__}", body=str(exc)) from exc
