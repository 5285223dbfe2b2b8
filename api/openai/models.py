"""`GET /v1/models` and `GET /v1/models/{id}`: the assistants a client can name."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.state import AppState
from domain.assistants import AssistantInfo
from domain.errors import NotFound

# A fixed date: the assistants are part of the service, not objects with a history of their own.
CREATED = 1_767_225_600


def _model(info: AssistantInfo) -> dict[str, object]:
    return {
        "id": info.name,
        "object": "model",
        "created": CREATED,
        "owned_by": "switchboard",
        "description": info.description,
    }


async def list_models(request: Request) -> Response:
    state: AppState = request.state.app
    user_id = await state.authenticator.authenticate(request.headers)
    return JSONResponse({"object": "list", "data": [_model(info) for info in state.assistants.visible_to(user_id)]})


async def get_model(request: Request) -> Response:
    state: AppState = request.state.app
    user_id = await state.authenticator.authenticate(request.headers)
    name = request.path_params["model_id"]
    # An assistant the caller may not use is missing, as far as the caller can tell.
    info = state.assistants.find(name, user_id=user_id)
    if info is None:
        raise NotFound(f"The model '{name}' does not exist", param="model", code="model_not_found")
    return JSONResponse(_model(info))
