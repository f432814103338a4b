"""Minimal request validation answering 400 the way OpenAI does.

Only obviously malformed bodies are rejected: the simulator is a test double,
not a schema validator, and must not be stricter than the real API.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from aiohttp import web

from simulator.faults import json_response
from simulator.wire import error_body

# OpenAI's own limits (text-embedding-3-large has 3,072 dimensions; 2,048 inputs per request), and a cap
# on their product that keeps one answer under ~5 MB of JSON: a test double need not return 120 MB.
MAX_DIMENSIONS: Final = 3072
MAX_INPUTS: Final = 2048
MAX_VALUES: Final = 2048 * 128


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def invalid_request(message: str, param: str | None = None) -> web.Response:
    return json_response(error_body(message, "invalid_request_error", param), status=400)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tokens_text(tokens: list[int]) -> str:
    # The simulator has no vocabulary: a token array stands for a text of that many tokens, stable per array.
    return " ".join(str(t) for t in tokens)


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"We could not parse the JSON body of your request: {exc}", None) from exc


def check_chat(body: Any) -> None:
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", None)
    if not isinstance(body.get("model"), str):
        raise BadRequest("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array.", "messages")
    if not all(isinstance(message, dict) for message in messages):
        raise BadRequest("Each entry of 'messages' must be an object.", "messages")
    if body.get("stream") not in (None, True, False):
        raise BadRequest("'stream' must be a boolean.", "stream")
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is not None and (not _is_int(value) or value < 0):
            raise BadRequest(f"'{name}' must be a non-negative integer.", name)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object.", "stream_options")


def check_embeddings(body: Any) -> list[str]:
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", None)
    if not isinstance(body.get("model"), str):
        raise BadRequest("you must provide a model parameter", "model")
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        inputs = [raw_input]
    elif isinstance(raw_input, list) and raw_input and all(isinstance(x, str) for x in raw_input):
        inputs = raw_input
    elif isinstance(raw_input, list) and raw_input and all(_is_int(t) for t in raw_input):
        inputs = [_tokens_text(raw_input)]  # one input given as token ids, as OpenAI accepts
    elif isinstance(raw_input, list) and raw_input and all(
            isinstance(x, list) and x and all(_is_int(t) for t in x) for x in raw_input):
        inputs = [_tokens_text(x) for x in raw_input]
    else:
        raise BadRequest("'input' must be a string, an array of strings, or token arrays.", "input")
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    if len(inputs) > MAX_INPUTS:
        raise BadRequest(f"'input' may hold at most {MAX_INPUTS} items.", "input")
    dims = body.get("dimensions")
    if dims is not None and (not _is_int(dims) or not 1 <= dims <= MAX_DIMENSIONS):
        raise BadRequest(f"'dimensions' must be an integer from 1 to {MAX_DIMENSIONS}.", "dimensions")
    if len(inputs) * (dims or 1) > MAX_VALUES:
        raise BadRequest(
            f"The simulator returns at most {MAX_VALUES} embedding values per request (inputs x dimensions).",
            "dimensions",
        )
    return inputs
