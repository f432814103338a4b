"""Client body checks (each naming its param), client-key auth, and the OpenAI error shape."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from config.schema import AuthConfig, ClientKey
from gateway.auth import KeyRing, hash_key
from gateway.dialects.chat import max_output_tokens, parse_chat_request, wants_stream_usage
from gateway.dialects.embeddings import parse_embeddings_request
from gateway.dialects.openai import parse_json_object
from gateway.errors import (
    AuthenticationFailed,
    BadGateway,
    ContextLengthExceeded,
    GatewayError,
    GatewayTimeout,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
    UpstreamPassthrough,
)

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


# --- auth --------------------------------------------------------------------------


def test_hash_key_format() -> None:
    digest = hash_key("sk-a")
    assert digest == "sha256:" + hashlib.sha256(b"sk-a").hexdigest()
    prefix, _, hexpart = digest.partition(":")
    assert prefix == "sha256"
    assert len(hexpart) == 64
    assert set(hexpart) <= set("0123456789abcdef")
    # What hash-key prints must be accepted by the config schema.
    assert ClientKey(name="a", hash=digest).hash == digest


def _ring() -> KeyRing:
    return KeyRing.from_config(
        AuthConfig(keys=[ClientKey(name="alpha", hash=hash_key("sk-a")), ClientKey(name="beta", hash=hash_key("sk-b"))])
    )


@pytest.mark.parametrize(
    ("header", "name"),
    [(b"Bearer sk-a", "alpha"), (b"Bearer sk-b", "beta"), (b"bearer sk-b", "beta"), (b"Bearer  sk-a ", "alpha")],
)
def test_identify_right_key(header: bytes, name: str) -> None:
    assert _ring().identify(header) == name


@pytest.mark.parametrize(
    "header",
    [None, b"", b"Bearer sk-c", b"Bearer sk-A", b"Bearer", b"Bearer    ", b"Basic c2stYQ==", b"sk-a", b"Token sk-a"],
)
def test_identify_rejects(header: bytes | None) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        _ring().identify(header)
    assert caught.value.status == 401
    # Never echo what was presented: it may be someone's real key sent to the wrong place.
    token = (header or b"").partition(b" ")[2].strip().decode()
    if token:
        assert token not in caught.value.message


def test_mode_none_is_open() -> None:
    ring = KeyRing.from_config(AuthConfig(mode="none"))
    assert ring.open_access
    assert ring.identify(None) == "anonymous"
    assert ring.identify(b"Bearer anything") == "anonymous"


def test_keyring_with_no_keys_rejects_everything() -> None:
    ring = KeyRing.from_config(AuthConfig(mode="keys", keys=[]))
    with pytest.raises(AuthenticationFailed):
        ring.identify(b"Bearer sk-a")


# --- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "status", "type_", "code"),
    [
        (GatewayError, 500, "api_error", "internal_error"),
        (InvalidRequest, 400, "invalid_request_error", None),
        (ContextLengthExceeded, 400, "invalid_request_error", "context_length_exceeded"),
        (AuthenticationFailed, 401, "authentication_error", "invalid_api_key"),
        (PermissionDenied, 403, "permission_error", "permission_denied"),
        (NotFound, 404, "invalid_request_error", "not_found"),
        (MethodNotAllowed, 405, "invalid_request_error", "method_not_allowed"),
        (PayloadTooLarge, 413, "invalid_request_error", "request_too_large"),
        (RateLimited, 429, "rate_limit_error", "rate_limit_exceeded"),
        (BadGateway, 502, "upstream_error", "bad_gateway"),
        (ServiceUnavailable, 503, "service_unavailable", "no_healthy_upstream"),
        (GatewayTimeout, 504, "timeout_error", "upstream_timeout"),
    ],
)
def test_error_classes_render_openai_shape(cls: type[GatewayError], status: int, type_: str, code: str | None) -> None:
    err = cls("something went wrong")
    assert err.status == status
    assert isinstance(err, GatewayError)
    expected = {"error": {"message": "something went wrong", "type": type_, "param": None, "code": code}}
    assert err.body() == expected
    assert orjson.loads(err.to_json()) == expected
    assert err.headers == {}
    assert str(err) == "something went wrong"


def test_error_param_code_and_headers() -> None:
    err = RateLimited("slow down", param="model", code="custom", headers={"retry-after": "3"})
    assert err.body()["error"] == {"message": "slow down", "type": "rate_limit_error", "param": "model",
                                   "code": "custom"}
    assert err.headers == {"retry-after": "3"}
    # An override on one instance must not leak into the class default.
    assert RateLimited("x").code == "rate_limit_exceeded"


def test_context_length_is_an_invalid_request() -> None:
    assert isinstance(ContextLengthExceeded("too long"), InvalidRequest)


def test_upstream_passthrough_carries_upstream_answer() -> None:
    exc = UpstreamPassthrough(422, b'{"error": "bad"}')
    assert exc.status == 422
    assert exc.body == b'{"error": "bad"}'
    assert exc.content_type == "application/json"
    assert not isinstance(exc, GatewayError)
