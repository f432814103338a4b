"""Inbound dialects: client bodies checked once (each rejection naming its param), chat stream frames,
and errors in the OpenAI envelope, the upstream's own included."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.dialects.chat import ChatCompletions, ChatFrames, max_output_tokens, parse_chat_request, wants_stream_usage
from gateway.dialects.embeddings import Embeddings, parse_embeddings_request
from gateway.dialects.openai import parse_json_object
from gateway.errors import InvalidRequest, NotFound

USER = {"role": "user", "content": "hi"}
# Marks a field to leave out of the body entirely (None would send an explicit null).
_DROP = object()


def chat(**fields: Any) -> bytes:
    body: dict[str, Any] = {"model": "gpt-4", "messages": [USER]}
    body.update(fields)
    return orjson.dumps({k: v for k, v in body.items() if v is not _DROP})



def rejected(parse: Any, body: bytes) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse(body)
    assert caught.value.status == 400
    return caught.value


# --- requests ----------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"{not json", b"[1, 2]", b'"text"', b"null"])
def test_body_must_be_a_json_object(body: bytes) -> None:
    err = rejected(parse_json_object, body)
    assert err.param is None


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"model": _DROP}, "model", "missing_required_parameter"),
        ({"model": None}, "model", "missing_required_parameter"),
        ({"model": 4}, "model", "invalid_type"),
        ({"model": ""}, "model", "invalid_type"),
        ({"messages": _DROP}, "messages", "missing_required_parameter"),
        ({"messages": "hi"}, "messages", "invalid_type"),
        ({"messages": []}, "messages", "empty_array"),
        ({"messages": [USER, "hi"]}, "messages[1]", "invalid_type"),
        ({"messages": [USER, {"content": "x"}]}, "messages[1].role", "invalid_type"),
        ({"messages": [{"role": 3, "content": "x"}]}, "messages[0].role", "invalid_type"),
        ({"messages": [USER, {"role": "robot", "content": "x"}]}, "messages[1].role", "invalid_value"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
        ({"messages": [{"role": "user", "content": {"text": "x"}}]}, "messages[0].content", "invalid_type"),
        ({"stream": "yes"}, "stream", "invalid_type"),
        ({"stream": 1}, "stream", "invalid_type"),
        ({"stream_options": True}, "stream_options", "invalid_type"),
        ({"stream_options": {"include_usage": "true"}}, "stream_options.include_usage", "invalid_type"),
        ({"max_tokens": "10"}, "max_tokens", "invalid_type"),
        ({"max_tokens": 1.5}, "max_tokens", "invalid_type"),
        ({"max_tokens": True}, "max_tokens", "invalid_type"),
        ({"max_tokens": 0}, "max_tokens", "invalid_value"),
        ({"max_completion_tokens": -1}, "max_completion_tokens", "invalid_value"),
        ({"max_completion_tokens": "x"}, "max_completion_tokens", "invalid_type"),
        ({"n": 0}, "n", "invalid_value"),
        ({"n": "2"}, "n", "invalid_type"),
        ({"temperature": "hot"}, "temperature", "invalid_type"),
        ({"temperature": True}, "temperature", "invalid_type"),
        ({"top_p": [1]}, "top_p", "invalid_type"),
        ({"presence_penalty": "0"}, "presence_penalty", "invalid_type"),
        ({"frequency_penalty": {}}, "frequency_penalty", "invalid_type"),
    ],
)
def test_chat_rejections_name_the_param(fields: dict[str, Any], param: str, code: str) -> None:
    err = rejected(parse_chat_request, chat(**fields))
    assert err.param == param
    assert err.code == code
    assert err.body()["error"]["param"] == param
    # The message names the field too, for clients that only print the message.
    assert param.split(".")[0].split("[")[0] in err.message


def test_role_value_is_truncated_in_message() -> None:
    err = rejected(parse_chat_request, chat(messages=[{"role": "x" * 500, "content": "hi"}]))
    assert "x" * 41 not in err.message


def test_valid_chat_passes_and_keeps_unknown_fields() -> None:
    body = {
        "model": "gpt-4",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "x"}]},
            {"role": "user", "content": "hi", "name": "bob"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]},
            {"role": "tool", "content": "42", "tool_call_id": "c"},
            {"role": "function", "content": "old"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 10,
        "max_completion_tokens": 20,
        "n": 1,
        "temperature": 0,
        "top_p": 0.5,
        "presence_penalty": -1,
        "frequency_penalty": 1.5,
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "response_format": {"type": "json_object"},
        "seed": 7,
        "x_future_field": {"nested": [1, 2]},
    }
    assert parse_chat_request(orjson.dumps(body)) == body


def test_null_optionals_are_accepted() -> None:
    fields = dict.fromkeys(
        ("stream", "stream_options", "max_tokens", "max_completion_tokens", "n", "temperature", "top_p"),
    )
    assert parse_chat_request(chat(**fields))["stream"] is None


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"model": _DROP}, "model", "missing_required_parameter"),
        ({"model": ["gpt-4"]}, "model", "invalid_type"),
        ({"input": _DROP}, "input", "missing_required_parameter"),
        ({"input": 5}, "input", "invalid_type"),
        ({"input": []}, "input", "invalid_type"),
        ({"input": ["a", 1]}, "input", "invalid_type"),
        ({"input": [True, False]}, "input", "invalid_type"),
        ({"input": {"text": "a"}}, "input", "invalid_type"),
        ({"input": [[1, 2], "a"]}, "input", "invalid_type"),
    ],
)
def test_embeddings_rejections_name_the_param(fields: dict[str, Any], param: str, code: str) -> None:
    body: dict[str, Any] = {"model": "text-embedding-3-small", "input": "hello", **fields}
    err = rejected(parse_embeddings_request, orjson.dumps({k: v for k, v in body.items() if v is not _DROP}))
    assert err.param == param
    assert err.code == code


@pytest.mark.parametrize("value", ["hello", ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
def test_valid_embeddings_pass(value: Any) -> None:
    body = {"model": "e", "input": value, "dimensions": 8, "encoding_format": "float"}
    assert parse_embeddings_request(orjson.dumps(body)) == body


def test_max_output_tokens_prefers_max_completion_tokens() -> None:
    assert max_output_tokens({"max_tokens": 10, "max_completion_tokens": 20}) == 20
    assert max_output_tokens({"max_tokens": 10}) == 10
    assert max_output_tokens({}) == 0


def test_wants_stream_usage() -> None:
    assert wants_stream_usage({"stream_options": {"include_usage": True}})
    assert not wants_stream_usage({"stream_options": {"include_usage": False}})
    assert not wants_stream_usage({"stream_options": None})
    assert not wants_stream_usage({})


def test_the_chat_dialect_reads_what_the_pipeline_needs() -> None:
    body = chat(stream=True, max_completion_tokens=50, stream_options={"include_usage": True})
    request = ChatCompletions().parse(body)
    assert (request.model, request.stream, request.body_size, request.max_output_tokens, request.wants_usage) == (
        "gpt-4", True, len(body), 50, True)
    assert request.payload == orjson.loads(body)
    embedded = Embeddings().parse(b'{"model": "e", "input": "x", "stream": true}')
    assert (embedded.stream, embedded.max_output_tokens, embedded.wants_usage) == (False, 0, False)


def test_chat_frames_keep_the_usage_chunk_only_when_the_client_asked() -> None:
    usage = {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
    data = orjson.dumps(usage)
    assert ChatFrames(client_wants_usage=False).event(data, usage) is None
    assert ChatFrames(client_wants_usage=True).event(data, usage) == b"data: " + data + b"\n\n"
    # A chunk with choices and usage is content: it always goes through.
    with_choice = {**usage, "choices": [{"index": 0, "delta": {"content": "x"}}]}
    assert ChatFrames(False).event(orjson.dumps(with_choice), with_choice) is not None
    assert ChatFrames(False).end(b": c\n\n") == b": c\n\ndata: [DONE]\n\n"
    broken = ChatFrames(False).broken()
    assert b"[DONE]" not in broken and orjson.loads(broken.removeprefix(b"data: "))["error"]["code"] == "stream_broken"


def test_errors_render_in_the_openai_envelope_the_upstreams_own_kept_when_it_is_one() -> None:
    dialect = ChatCompletions()
    assert orjson.loads(dialect.error_body(NotFound("no", code="model_not_found")))["error"]["code"] == (
        "model_not_found")
    own = b'{"error": {"message": "max_tokens too large", "param": "max_tokens"}}'
    assert dialect.upstream_error_body(400, own) == own
    wrapped = orjson.loads(dialect.upstream_error_body(422, b"<html>nope</html>"))
    assert wrapped["error"]["code"] == "upstream_rejected" and "422" in wrapped["error"]["message"]
