"""OpenAI's Responses API, mounted at `/v1`."""

from starlette.routing import BaseRoute, Route

from api.responses.routes import (
    cancel_response,
    create_response,
    delete_response,
    list_input_items,
    retrieve_response,
)

routes: list[BaseRoute] = [
    Route("/responses", create_response, methods=["POST"]),
    Route("/responses/{response_id}", retrieve_response, methods=["GET"]),
    Route("/responses/{response_id}", delete_response, methods=["DELETE"]),
    Route("/responses/{response_id}/cancel", cancel_response, methods=["POST"]),
    Route("/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
]
