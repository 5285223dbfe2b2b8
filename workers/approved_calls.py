"""Running an approved tool call at most once, whatever happens to the worker.

An assistant's MCP servers act outside our database, so a call cannot commit with its effect as the
todo tools' calls do. Instead its record is committed before the call and settled with the result
after it: a later attempt of the run (the worker was killed, say) finds the record and never calls
again. It gets the recorded result, or, when the worker died during the call, is told the outcome
is unknown. The call must also be the one its owner approved: same run, same call id, and arguments
with the digest that was shown.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from mcp_types import CallToolResult, TextContent
from sqlalchemy.ext.asyncio import AsyncEngine

from domain import approvals, tool_calls
from domain.database import unavailable_on_connection_errors

log = structlog.get_logger("switchboard.worker.approved_calls")

NOT_APPROVED = "This call was not approved with these arguments, so it was not run."
OUTCOME_UNKNOWN = (
    "The worker running this approved call stopped during it, so whether it took effect is unknown; "
    "it was not run again."
)


class ApprovedCalls:
    def __init__(self, db_engine: AsyncEngine) -> None:
        self._db_engine = db_engine

    async def run_once(
        self,
        *,
        run_id: str,
        call_id: str,
        tool: str,
        arguments: dict[str, Any],
        call: Callable[[], Awaitable[CallToolResult]],
    ) -> CallToolResult:
        async with unavailable_on_connection_errors(), self._db_engine.begin() as connection:
            approved = await approvals.approved_call(connection, run_id=run_id, call_id=call_id, arguments=arguments)
            if approved is None:
                log.warning("tool.not_approved", call_id=call_id, tool=tool)
                return _error(NOT_APPROVED)
            if approved.settled:
                return _recorded(approved.result, is_error=approved.is_error)
            if approved.record_id is not None:
                log.warning("tool.outcome_unknown", call_id=call_id, tool=tool)
                return _error(OUTCOME_UNKNOWN)
            record_id = await approvals.claim_approved_call(
                connection,
                run_id=run_id,
                approval_id=approved.approval_id,
                call_id=call_id,
                tool=tool,
                arguments=arguments,
            )
        if record_id is None:
            return _error(OUTCOME_UNKNOWN)  # another attempt claimed it a moment ago
        result = await call()
        async with unavailable_on_connection_errors(), self._db_engine.begin() as connection:
            await tool_calls.settle(
                connection, record_id=record_id, result=result.model_dump(mode="json"), is_error=result.is_error
            )
        return result


def _error(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def _recorded(result: Any, *, is_error: bool) -> CallToolResult:
    try:
        return CallToolResult.model_validate(result)
    except ValueError:
        return CallToolResult(content=[TextContent(type="text", text=json.dumps(result))], is_error=is_error)
