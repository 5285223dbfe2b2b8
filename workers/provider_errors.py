"""The model provider's failures, translated at the edge into ours, whichever SDK met them.

The general assistant meets them as PydanticAI exceptions, the todo assistant as the OpenAI SDK's
and the Agents SDK's. Either way the run fails with `provider_error` or `provider_timeout` and a
message a client may read; the provider's status and the start of its body, which may say more
than a client should see, stay on the error for the one log line the job writes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import openai
from agents.exceptions import AgentsException, MaxTurnsExceeded
from pydantic_ai.exceptions import ModelAPIError, ModelHTTPError, ModelTimeoutError, UnexpectedModelBehavior

from domain.errors import ProviderError, ProviderTimeout

BODY_LOG_CHARS = 500


class ProviderFailure(ProviderError):
    """A provider error with what the provider said, for the log."""

    def __init__(self, message: str, *, status: int | None = None, body: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = _start_of(body)


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
        message = f"the model provider answered HTTP {exc.status_code}"
        raise ProviderFailure(message, status=exc.status_code, body=exc.body) from exc
    except openai.APIStatusError as exc:
        message = f"the model provider answered HTTP {exc.status_code}"
        raise ProviderFailure(message, status=exc.status_code, body=exc.body) from exc
    except openai.APIConnectionError as exc:
        raise ProviderFailure("the model provider could not be reached") from exc
    except MaxTurnsExceeded as exc:
        raise ProviderFailure(f"the model made more than {max_turns} steps without answering") from exc
    except (ModelAPIError, UnexpectedModelBehavior, AgentsException) as exc:
        raise ProviderFailure(f"the model provider failed: {type(exc).__name__}", body=str(exc)) from exc
