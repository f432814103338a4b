"""POST /v1/chat/completions: the canonical dialect, passed through both ways.

The body is parsed once and only the fields the gateway relies on are checked;
everything else (tools, response_format, seed, unknown future fields) is left
untouched for the upstream. Answers and stream events go back byte for byte. The
usage chunk the gateway asks for on the client's behalf is left out of the stream
unless the client asked for it too; a stream that broke ends with an SSE error
frame and no `[DONE]`, so no client mistakes it for a complete answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.dialects.base import ClientRequest
from gateway.dialects.openai import CanonicalDialect, optional_int, optional_number, parse_json_object, require_model
from gateway.errors import InvalidRequest

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


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
    require_model(data)
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
    optional_int(data, "max_tokens", 1)
    optional_int(data, "max_completion_tokens", 1)
    optional_int(data, "n", 1)
    for field in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        optional_number(data, field)
    return data


def max_output_tokens(data: dict[str, Any]) -> int:
    value = data.get("max_completion_tokens") or data.get("max_tokens")
    return value if isinstance(value, int) else 0


def wants_stream_usage(data: dict[str, Any]) -> bool:
    options = data.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def error_frame(message: str, code: str) -> bytes:
    body = {"error": {"message": message, "type": "upstream_error", "param": None, "code": code}}
    return b"data: " + orjson.dumps(body) + b"\n\n"


_DONE_FRAME = b"data: [DONE]\n\n"
_BROKEN_FRAME = error_frame(
    "The upstream stream broke before it finished; the answer above is incomplete.", "stream_broken"
)


class ChatFrames:
    content_type = b"text/event-stream; charset=utf-8"
    passthrough = True

    def __init__(self, client_wants_usage: bool) -> None:
        self.wants_usage = client_wants_usage

    def event(self, data: bytes, usage_chunk: Mapping[str, Any] | None) -> bytes | None:
        # The final usage chunk (no choices) is the one the gateway asked for on the client's behalf.
        if usage_chunk is not None and not self.wants_usage and not usage_chunk.get("choices"):
            return None
        return b"data: " + data + b"\n\n"

    def end(self, trailer: bytes) -> bytes:
        return trailer + _DONE_FRAME

    def broken(self) -> bytes:
        return _BROKEN_FRAME

    async def settle(self) -> None:
        pass


class ChatCompletions(CanonicalDialect):
    endpoint = "chat"
    upstream_path = "/chat/completions"
    fits_context = True
    shadowable = True

    def parse(self, body: bytes) -> ClientRequest:
        payload = parse_chat_request(body)
        return ClientRequest(  # model, payload, stream, body_size, max_output_tokens, wants_usage
            payload["model"], payload, payload.get("stream") is True, len(body), max_output_tokens(payload),
            wants_stream_usage(payload),
        )

    def stream_frames(self, request: ClientRequest, native: bool) -> ChatFrames:
        return ChatFrames(request.wants_usage)
