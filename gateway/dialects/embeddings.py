"""POST /v1/embeddings: canonical, passed through; never streamed, fitted or shadowed."""

from __future__ import annotations

from typing import Any

from gateway.dialects.base import ClientRequest, StreamFrames
from gateway.dialects.openai import CanonicalDialect, parse_json_object, require_model
from gateway.errors import InvalidRequest


def parse_embeddings_request(body: bytes) -> dict[str, Any]:
    data = parse_json_object(body)
    require_model(data)
    value = data.get("input")
    if value is None:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    valid = isinstance(value, str) or (
        isinstance(value, list)
        and bool(value)
        and (
            all(isinstance(v, str) for v in value)
            or all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value)
        )
    )
    if not valid:
        raise InvalidRequest(
            "Invalid 'input': expected a string, an array of strings, or an array of token arrays.",
            param="input", code="invalid_type",
        )
    return data


class Embeddings(CanonicalDialect):
    endpoint = "embeddings"
    upstream_path = "/embeddings"
    fits_context = False
    shadowable = False

    def parse(self, body: bytes) -> ClientRequest:
        payload = parse_embeddings_request(body)
        return ClientRequest(payload["model"], payload, False, len(body), 0, False)

    def stream_frames(self, request: ClientRequest, native: bool) -> StreamFrames:
        raise AssertionError("embeddings are never streamed")
