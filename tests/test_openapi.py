"""`GET /openapi.json` (issue 10): valid OpenAPI 3.1, served without credentials, naming every route the
app has and no other, with the error shape the API really answers."""

from __future__ import annotations

import json
from collections.abc import Iterator

import schemathesis
from starlette.routing import BaseRoute, Mount, Route

from api.app import create_app
from api.errors import error_body
from api.openapi._document import Error
from api.openapi.route import document_bytes
from domain.settings import Settings
from tests.deployment import Deployment

# Routes that take every method (ASGI apps mounted as they are): the methods their clients use.
ANY_METHOD_ROUTES = {"/mcp": {"GET", "POST"}}
MOUNTED_APPS = {"/static": "/static/{file}"}


def app_operations(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    for route in routes:
        if isinstance(route, Mount) and route.routes:
            yield from app_operations(route.routes, prefix + route.path)
        elif isinstance(route, Mount):
            yield "get", MOUNTED_APPS[prefix + route.path]
        elif isinstance(route, Route):
            path = prefix + route.path_format
            methods = route.methods or ANY_METHOD_ROUTES[path]
            yield from ((method.lower(), path) for method in methods if method != "HEAD")


def test_the_document_is_valid_openapi_3_1() -> None:
    document = json.loads(document_bytes())
    assert document["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(document).validate()  # against OpenAPI 3.1's own schema


def test_every_route_is_documented_and_nothing_else() -> None:
    document = json.loads(document_bytes())
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert documented == set(app_operations(create_app(Settings()).routes))


def test_every_operation_but_the_public_ones_needs_credentials() -> None:
    document = json.loads(document_bytes())
    assert document["security"] == [{"bearer": []}]
    public = {
        path for path, item in document["paths"].items() for operation in item.values() if "security" in operation
    }
    assert public == {"/healthz", "/readyz", "/metrics", "/openapi.json", "/", "/static/{file}"}


def test_the_error_shape_is_the_one_the_api_answers() -> None:
    for body in (
        error_body("no", type_="invalid_request_error", code=None),
        error_body("no", type_="invalid_request_error", code="not_found", param="x"),
    ):
        assert Error.model_validate(body).model_dump() == body
    assert json.loads(document_bytes())["components"]["schemas"]["Error"]["required"] == ["error"]


async def test_served_without_credentials(deployment: Deployment) -> None:
    async with deployment.http(user=None) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == json.loads(document_bytes())


async def test_mcp_answers_post_and_get_only(deployment: Deployment) -> None:
    headers = {"Accept": "application/json, text/event-stream"}
    async with deployment.http() as client:
        for method in ("DELETE", "PUT", "PATCH"):
            response = await client.request(method, "/mcp", headers=headers)
            assert response.status_code == 405, (method, response.status_code, response.text)
        async with client.stream("GET", "/mcp", headers=headers) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
