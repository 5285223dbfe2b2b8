"""`POST /v1/runs/{run_id}/cancel`: stop a run, from any API process.

The request is recorded in the run's row before anything else (api/relay/cancel.py), so it holds
whatever fails next. The answer is the run once it has ended, waiting up to `WAIT_S`; 202 with the
run as it stands if it has not ended by then. Idempotent: a finished run is returned unchanged, 200.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.relay.cancel import cancel_run, wait_until_finished
from api.runs_api.routes import owned_run, run_object
from api.state import AppState
from domain.models import FINISHED

WAIT_S = 5.0


async def cancel(request: Request) -> Response:
    state: AppState = request.state.app
    user_id = await state.authenticator.authenticate(request.headers)
    run_id = request.path_params["run_id"]
    if await cancel_run(state, user_id=user_id, run_id=run_id) is None:
        await owned_run(state, user_id, run_id)  # not this user's: 404, exactly as for a missing run
    ended = await wait_until_finished(state, run_id, timeout_s=WAIT_S)
    run = await owned_run(state, user_id, run_id)
    finished = ended is not None and ended.status in FINISHED
    return JSONResponse(run_object(run), status_code=200 if finished else 202)
