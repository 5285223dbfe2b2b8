"""`POST /v1/runs/{run_id}/approvals`: the run's owner decides one tool call the run stopped at.

The body names the call and the decision; it cannot say what the call does, which the server
recorded when the run stopped (an `arguments_hash` may be sent to make sure the decision is about
what the client showed). Once no call is pending, the run is queued again and goes on, on any worker.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.body import read_json, validate
from api.relay.resume_run import enqueue_resumed
from api.runs_api.routes import owned_run, pending_approvals, run_object
from api.state import AppState
from domain import approvals
from domain.database import unavailable_on_connection_errors
from domain.text import StorableText


class ApprovalDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    call_id: Annotated[StorableText, Field(min_length=1, max_length=255)]
    decision: approvals.Decision
    reason: Annotated[StorableText, Field(max_length=2000)] | None = None
    arguments_hash: Annotated[str, Field(pattern="^[0-9a-f]{64}$")] | None = None


async def decide(request: Request) -> Response:
    state: AppState = request.state.app
    user_id = await state.authenticator.authenticate(request.headers)
    run_id = request.path_params["run_id"]
    body = validate(ApprovalDecision, await read_json(request, max_bytes=state.settings.max_body_bytes))
    async with unavailable_on_connection_errors(), state.db_engine.begin() as connection:
        decided = await approvals.decide(
            connection,
            user_id=user_id,
            run_id=run_id,
            call_id=body.call_id,
            decision=body.decision,
            reason=body.reason,
            expected_hash=body.arguments_hash,
        )
    if decided.resumed:
        await enqueue_resumed(state, run_id)
    run = await owned_run(state, user_id, run_id)
    return JSONResponse(run_object(run, await pending_approvals(state, run)))
