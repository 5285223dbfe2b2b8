"""The ChatKit protocol at `/chatkit`, on our own conversations."""

from starlette.routing import BaseRoute, Route

from api.chatkit.route import CHATKIT_PATH, ChatKitEndpoint


def routes() -> list[BaseRoute]:
    """The endpoint, with a ChatKit server of its own that loads on the first request."""
    return [Route(CHATKIT_PATH, ChatKitEndpoint().handle, methods=["POST"])]
