"""Who is calling the todo API, checked in the order clients rely on: 401, then 403."""

from __future__ import annotations

from starlette.requests import Request

from api.state import AppState
from domain.errors import PermissionDenied

# A path's `{user_id}` may be `me`, the caller whoever it is: a trusted front end's user
# (`openwebui/u-123`) has a `/` in its id, which no path segment can hold.
SELF = "me"


async def caller(request: Request) -> tuple[AppState, str]:
    """Authenticate, then check the path names the caller: 401 before 403."""
    state: AppState = request.state.app
    user_id = await state.authenticator.authenticate(request.headers)
    path_user = request.path_params.get("user_id")
    if path_user is not None and path_user not in (user_id, SELF):
        raise PermissionDenied("you can only act as yourself: the path's user id is not yours")
    return state, user_id
