"""The native runs API, mounted at `/v1` beside the OpenAI routes: read, list, follow and cancel runs."""

from starlette.routing import BaseRoute, Route

from api.runs_api.approvals import decide
from api.runs_api.cancel import cancel
from api.runs_api.routes import get_run, list_runs, run_events

routes: list[BaseRoute] = [
    Route("/runs", list_runs, methods=["GET"]),
    Route("/runs/{run_id}", get_run, methods=["GET"]),
    Route("/runs/{run_id}/events", run_events, methods=["GET"]),
    Route("/runs/{run_id}/cancel", cancel, methods=["POST"]),
    Route("/runs/{run_id}/approvals", decide, methods=["POST"]),
]
