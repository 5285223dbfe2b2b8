"""The smallest value that validates against a JSON schema: what the demo model answers when a client
asks for structured output, so that `client.chat.completions.parse(...)` works against it.

It covers what OpenAI's structured outputs and pydantic's schemas use: `$ref` into `$defs`, objects with
their required properties (strict mode requires all of them), arrays with `minItems`, strings with
`enum`, `const`, `minLength` and the common `format`s, numbers with bounds, `anyOf`/`oneOf` (the first
branch) and `allOf` (merged).
"""

from __future__ import annotations

from typing import Any

# Deep enough for any real schema; a recursive one ($ref to itself through required fields) stops here.
MAX_DEPTH = 32

_FORMATS = {
    "date-time": "1970-01-01T00:00:00Z",
    "date": "1970-01-01",
    "time": "00:00:00",
    "email": "demo@example.com",
    "uri": "https://example.com",
    "uuid": "00000000-0000-0000-0000-000000000000",
}


def minimal_instance(schema: dict[str, Any]) -> Any:
    return _instance(schema, root=schema, depth=0)


def _instance(schema: Any, *, root: dict[str, Any], depth: int) -> Any:
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return None
    if "$ref" in schema:
        return _instance(_resolve(schema["$ref"], root), root=root, depth=depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return _instance(schema[key][0], root=root, depth=depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged = _merge(merged, _resolve(part["$ref"], root) if "$ref" in part else part)
        return _instance(merged, root=root, depth=depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((name for name in kind if name != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    match kind:
        case "object":
            properties: dict[str, Any] = schema.get("properties", {})
            required = schema.get("required", list(properties))
            return {name: _instance(properties.get(name, {}), root=root, depth=depth + 1) for name in required}
        case "array":
            item = _instance(schema.get("items", {}), root=root, depth=depth + 1)
            return [item] * int(schema.get("minItems", 0))
        case "string":
            if schema.get("format") in _FORMATS:
                return _FORMATS[schema["format"]]
            return "x" * int(schema.get("minLength", 0))
        case "integer" | "number":
            return _number(schema, integer=kind == "integer")
        case "boolean":
            return False
        case _:
            return None


def _number(schema: dict[str, Any], *, integer: bool) -> int | float:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    value: float = 0
    if low is not None and value < low:
        value = low + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)
    elif high is not None and value > high:
        value = high - (1 if "exclusiveMaximum" in schema and "maximum" not in schema else 0)
    return int(value) if integer else value


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    """A local `#/...` reference; anything else resolves to the empty schema."""
    if not ref.startswith("#"):
        return {}
    node: Any = root
    for key in filter(None, ref[1:].split("/")):
        node = node.get(key.replace("~1", "/").replace("~0", "~"), {}) if isinstance(node, dict) else {}
    return node


def _merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    merged = {**left, **right}
    if "properties" in left or "properties" in right:
        merged["properties"] = {**left.get("properties", {}), **right.get("properties", {})}
        merged["required"] = [*left.get("required", []), *right.get("required", [])]
    return merged
