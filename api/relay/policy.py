"""Which conversation policy a request asks for: `X-Conversation-Policy`, or the server's setting."""

from __future__ import annotations

from typing import get_args

from starlette.requests import Request

from domain.errors import InvalidRequest
from domain.run_request import ConversationPolicy
from domain.settings import Settings

POLICY_HEADER = "x-conversation-policy"
POLICIES: tuple[ConversationPolicy, ...] = get_args(ConversationPolicy)


def conversation_policy(request: Request, settings: Settings) -> ConversationPolicy:
    given = request.headers.get(POLICY_HEADER, "").strip().lower()
    if not given:
        return settings.conversation_policy
    for policy in POLICIES:
        if given == policy:
            return policy
    raise InvalidRequest(f"X-Conversation-Policy must be one of {', '.join(POLICIES)}", param="X-Conversation-Policy")
