"""Parse a client body once and check just the fields the gateway relies on.

Everything else (tools, response_format, seed, unknown future fields) is left
untouched for the upstream. Each rejection names the offending field in `param`.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import InvalidRequest

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


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
    return data


def _require_model(data: dict[str, Any]) -> str:
    model = data.get("model")
    if model is None:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("Invalid type for 'model': expected a non-empty string.", param="model",
                             code="invalid_type")
    return model


def _optional_int(data: dict[str, Any], field: str, minimum: int) -> int | None:
    value = data.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"Invalid type for '{field}': expected an integer.", param=field, code="invalid_type")
    if value < minimum:
        raise InvalidRequest(f"Invalid '{field}': must be at least {minimum}.", param=field, code="invalid_value")
    return value


def _optional_number(data: dict[str, Any], field: str) -> None:
    value = data.get(field)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise InvalidRequest(f"Invalid type for '{field}': expected a number.", param=field, code="invalid_type")


def _check_messages(messages: Any) -> None:
    if messages is None:
        raise InvalidRequest("Missing required parameter: 'messages'.", param="messages",
                             code="missing_required_parameter")
    if not isinstance(messages, list):
        raise InvalidRequest("Invalid type for 'messages': expected an array.", param="messages", code="invalid_type")
    if not messages:
        raise InvalidRequest("Invalid 'messages': empty array. Expected at least one message.", param="messages",
                             code="empty_array")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"Invalid type for '{where}': expected an object.", param=where, code="invalid_type")
        role = message.get("role")
        if not isinstance(role, str):
            raise InvalidRequest(f"Missing or invalid '{where}.role'.", param=f"{where}.role", code="invalid_type")
        if role not in _ROLES:
            raise InvalidRequest(
                f"Invalid value for '{where}.role': '{role[:40]}'. Supported: {', '.join(sorted(_ROLES))}.",
                param=f"{where}.role", code="invalid_value",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise InvalidRequest(f"Invalid type for '{where}.content': expected a string or an array of parts.",
                                 param=f"{where}.content", code="invalid_type")


def parse_chat_request(body: bytes) -> dict[str, Any]:
    data = parse_json_object(body)
    _require_model(data)
    _check_messages(data.get("messages"))
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("Invalid type for 'stream': expected a boolean.", param="stream", code="invalid_type")
    options = data.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise InvalidRequest("Invalid type for 'stream_options': expected an object.", param="stream_options",
                                 code="invalid_type")
        include = options.get("include_usage")
        if include is not None and not isinstance(include, bool):
            raise InvalidRequest("Invalid type for 'stream_options.include_usage': expected a boolean.",
                                 param="stream_options.include_usage", code="invalid_type")
    _optional_int(data, "max_tokens", 1)
    _optional_int(data, "max_completion_tokens", 1)
    _optional_int(data, "n", 1)
    for field in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        _optional_number(data, field)
    return data


def parse_embeddings_request(body: bytes) -> dict[str, Any]:
    data = parse_json_object(body)
    _require_model(data)
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


def max_output_tokens(data: dict[str, Any]) -> int:
    value = data.get("max_completion_tokens") or data.get("max_tokens")
    return value if isinstance(value, int) else 0


def wants_stream_usage(data: dict[str, Any]) -> bool:
    options = data.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
