"""The smallest JSON value that fits a JSON Schema, so a simulated model honours structured output
(`response_format` in Chat Completions, `text.format` in the Responses API) and SDK helpers that parse the
answer into a model (`.parse(...)`) work against it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

_MAX_DEPTH = 32
# Values built in all: a recursive schema ({"a": {"$ref": "#"}, "b": ...}) would otherwise grow exponentially
# within the depth bound, and in-process the simulator shares the gateway's event loop.
_MAX_NODES = 10_000


def instance_of(schema: Any, root: Mapping[str, Any] | None = None, depth: int = 0,
                budget: list[int] | None = None) -> Any:
    budget = budget if budget is not None else [_MAX_NODES]
    budget[0] -= 1
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH or budget[0] < 0:
        return None
    root = root if root is not None else schema
    if isinstance(schema.get("$ref"), str):
        return instance_of(_resolve(schema["$ref"], root), root, depth + 1, budget)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for combined in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(combined), list) and schema[combined]:
            return instance_of(schema[combined][0], root, depth + 1, budget)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            return {}
        return {name: instance_of(sub, root, depth + 1, budget) for name, sub in properties.items()}
    if kind == "array":
        count = schema.get("minItems", 0) if isinstance(schema.get("minItems"), int) else 0
        return [instance_of(schema.get("items"), root, depth + 1, budget) for _ in range(min(count, 8))]
    if kind == "string":
        return "simulated"
    if kind in ("integer", "number"):
        minimum = schema.get("minimum")
        return minimum if isinstance(minimum, int | float) else 0
    if kind == "boolean":
        return False
    return None


def _resolve(ref: str, root: Mapping[str, Any]) -> Any:
    node: Any = root
    for part in ref.removeprefix("#/").split("/") if ref.startswith("#/") else ():
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def structured_reply(body: Mapping[str, Any]) -> str | None:
    """The JSON text a request for structured output gets, or None when it asked for none. Reads chat's
    `response_format` and the Responses API's `text.format`."""
    fmt = body.get("response_format")
    schema_holder = fmt.get("json_schema") if isinstance(fmt, Mapping) else None
    if not isinstance(fmt, Mapping):
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, Mapping) else None
        schema_holder = fmt
    if not isinstance(fmt, Mapping):
        return None
    if fmt.get("type") == "json_schema" and isinstance(schema_holder, Mapping):
        return orjson.dumps(instance_of(schema_holder.get("schema"))).decode()
    if fmt.get("type") == "json_object":
        return '{"simulated": true}'
    return None
