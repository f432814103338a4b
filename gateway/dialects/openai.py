"""What every OpenAI-dialect endpoint shares: body checks that name the offending field, and the error envelope.

Each rejection names the field in `param`, as OpenAI's own API does, so SDKs and
their users see which field to fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from gateway.dialects.base import ClientRequest
from gateway.errors import GatewayError, InvalidRequest
from providers.base import UpstreamReply

# How deep a request's JSON may nest (objects and arrays). Deeper, the gateway could not serialise it for
# the upstream (orjson stops at 255 levels) nor count its tokens, so it is the client's error, said at once.
MAX_NESTING = 64


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be valid JSON."
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    # A body with fewer brackets than the limit cannot nest deeper than it: the walk is for the rare rest.
    if body.count(b"[") + body.count(b"{") > MAX_NESTING:
        _check_nesting(data)
    return data


def _check_nesting(data: dict[str, Any]) -> None:
    """Level by level through containers only (about 1 ms for a thousand messages of parts)."""
    if _depth_within(data.values()):
        return
    key = next(k for k, v in data.items() if not _depth_within([v]))
    raise InvalidRequest(
        f"Invalid '{key[:100]}': nested more than {MAX_NESTING} levels deep.", param=key[:100], code="invalid_value",
    )


def _depth_within(values: Iterable[Any]) -> bool:
    frontier = [v for v in values if type(v) is dict or type(v) is list]
    depth = 2  # the body's own object is level 1
    while frontier:
        if depth > MAX_NESTING:
            return False
        deeper: list[Any] = []
        for node in frontier:
            deeper += [c for c in (node.values() if type(node) is dict else node) if type(c) is dict or type(c) is list]
        frontier, depth = deeper, depth + 1
    return True


def require_model(data: dict[str, Any]) -> str:
    model = data.get("model")
    if model is None:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("Invalid type for 'model': expected a non-empty string.", param="model",
                             code="invalid_type")
    return model


def optional_int(data: dict[str, Any], field: str, minimum: int) -> int | None:
    value = data.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"Invalid type for '{field}': expected an integer.", param=field, code="invalid_type")
    if value < minimum:
        raise InvalidRequest(f"Invalid '{field}': must be at least {minimum}.", param=field, code="invalid_value")
    return value


def optional_number(data: dict[str, Any], field: str) -> None:
    value = data.get(field)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise InvalidRequest(f"Invalid type for '{field}': expected a number.", param=field, code="invalid_type")


class CanonicalDialect:
    """A dialect the upstreams speak too: answers pass through as they came. Errors are OpenAI's
    `{"error": {"message", "type", "param", "code"}}`, so the SDKs raise their matching class."""

    def answer_body(self, reply: UpstreamReply, native: bool) -> bytes:
        return reply.body

    async def answer(self, request: ClientRequest, reply: UpstreamReply, native: bool) -> bytes:
        return self.answer_body(reply, native)

    def error_body(self, error: GatewayError) -> bytes:
        return error.to_json()

    def upstream_error_body(self, status: int, body: bytes) -> bytes:
        """The upstream's own 4xx body when it is already OpenAI-shaped; wrapped otherwise."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return body
        message = f"The upstream provider rejected the request with status {status}."
        return InvalidRequest(message, code="upstream_rejected").to_json()
