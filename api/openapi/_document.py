"""An OpenAPI 3.1 document built from operations declared with the pydantic models their routes validate.

pydantic writes JSON Schema 2020-12, which is OpenAPI 3.1's own dialect: every request body and every
parameter is the schema of the model the route checks it with, so the document follows the code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode

COMPONENTS = "#/components/schemas/{model}"
SECURITY_SCHEME = "bearer"
ERROR_SCHEMA = "Error"
_PATH_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)}")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class Error(BaseModel):
    """Every refusal and failure the API answers itself, in OpenAI's shape (api/errors.py `error_body`)."""

    error: ErrorDetail


# What each status means wherever an operation names it without saying more.
STATUS_MEANINGS: dict[int, str] = {
    200: "OK",
    202: "Accepted",
    204: "No Content",
    400: "Invalid request",
    401: "Missing or invalid credentials",
    403: "Not the caller's own path",
    404: "Not found, or not the caller's",
    406: "Not acceptable",
    409: "Conflict (the conversation is busy)",
    413: "Request body too large",
    421: "Host not allowed",
    422: "Unprocessable request",
    429: "Overloaded: retry after `Retry-After` seconds",
    502: "The model provider failed",
    503: "Redis, the database or the workers are unavailable: retry after `Retry-After` seconds",
    504: "The model provider or the run timed out",
}
JSON = "application/json"
EVENT_STREAM = "text/event-stream"


@dataclass(frozen=True, kw_only=True)
class Operation:
    """One method on one path, as a client calls it."""

    method: Literal["get", "post", "delete"]
    path: str  # `{name}` for each path parameter
    operation_id: str
    summary: str
    tag: str
    body: TypeAdapter[Any] | None = None  # a JSON request body
    query: type[BaseModel] | None = None  # one field per query parameter
    headers: type[BaseModel] | None = None  # one field per header, named by its alias
    path_descriptions: dict[str, str] = field(default_factory=dict)
    # Status -> description (None: the usual meaning); errors get the `Error` body.
    responses: dict[int, str | None] = field(default_factory=dict)
    success_media: Sequence[str] = (JSON,)
    # Statuses whose body is the protocol's own (MCP's JSON-RPC errors), not `Error`.
    protocol_errors: Sequence[int] = ()
    authenticated: bool = True


def build_document(
    *,
    title: str,
    version: str,
    description: str,
    operations: Sequence[Operation],
    caller_headers: type[BaseModel] | None = None,
) -> dict[str, Any]:
    """The document; `caller_headers` are headers every authenticated operation takes (who the caller is)."""
    bodies = [(op.operation_id, op.body) for op in operations if op.body is not None]
    inputs: list[tuple[str, JsonSchemaMode, TypeAdapter[Any]]] = [
        (key, "validation", adapter) for key, adapter in bodies
    ]
    inputs.append((ERROR_SCHEMA, "serialization", TypeAdapter(Error)))
    schemas, definitions = TypeAdapter.json_schemas(inputs, ref_template=COMPONENTS)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        body = schemas.get((op.operation_id, "validation"))
        error = schemas[(ERROR_SCHEMA, "serialization")]
        paths.setdefault(op.path, {})[op.method] = _operation(
            op, body, error, caller_headers if op.authenticated else None
        )
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`SWITCHBOARD_API_KEYS`) or a JWT whose `sub` is the user id",
                }
            },
        },
        "security": [{SECURITY_SCHEME: []}],
    }


def _operation(
    op: Operation, body: dict[str, Any] | None, error: dict[str, Any], caller_headers: type[BaseModel] | None
) -> dict[str, Any]:
    parameters = [
        *(_path_parameter(name, op.path_descriptions.get(name)) for name in _PATH_PARAM.findall(op.path)),
        *_parameters(op.query, "query"),
        *_parameters(op.headers, "header"),
        *_parameters(caller_headers, "header"),
    ]
    statuses = {**op.responses}
    if op.authenticated:
        statuses.setdefault(401, None)
    responses: dict[str, Any] = {}
    for status, meaning in sorted(statuses.items()):
        response: dict[str, Any] = {"description": meaning or STATUS_MEANINGS[status]}
        if status in op.protocol_errors:
            response["content"] = {JSON: {}}
        elif status >= 400:
            response["content"] = {JSON: {"schema": error}}
        elif status != 204:
            response["content"] = {media: {} for media in op.success_media}
        responses[str(status)] = response
    result: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag]}
    if parameters:
        result["parameters"] = parameters
    if body is not None:
        result["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    result["responses"] = responses
    if not op.authenticated:
        result["security"] = []
    return result


def _path_parameter(name: str, description: str | None) -> dict[str, Any]:
    parameter: dict[str, Any] = {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
    if description:
        parameter["description"] = description
    return parameter


def _parameters(model: type[BaseModel] | None, location: Literal["query", "header"]) -> list[dict[str, Any]]:
    """One parameter per field of `model`, named by its alias; optional ones lose their `null` branch,
    since an absent parameter, not a null one, is how a client leaves it out."""
    if model is None:
        return []
    schema = model.model_json_schema(by_alias=True, ref_template=COMPONENTS)
    if "$defs" in schema:
        raise ValueError(f"{model.__name__}: a parameter's schema must be self-contained")
    required = set(schema.get("required", ()))
    parameters = []
    for name, field_schema in schema["properties"].items():
        field_schema = _without_null({key: value for key, value in field_schema.items() if key != "title"})
        parameter: dict[str, Any] = {"name": name, "in": location, "required": name in required}
        if "description" in field_schema:
            parameter["description"] = field_schema.pop("description")
        parameter["schema"] = field_schema
        parameters.append(parameter)
    return parameters


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    branches = schema.get("anyOf")
    if not branches:
        return schema
    kept = [branch for branch in branches if branch != {"type": "null"}]
    rest = {key: value for key, value in schema.items() if key != "anyOf"}
    if "default" in rest and rest["default"] is None:
        del rest["default"]
    return {**kept[0], **rest} if len(kept) == 1 else {**rest, "anyOf": kept}
