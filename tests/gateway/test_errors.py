"""The gateway's one exception tree, rendered as OpenAI's error envelope."""

from __future__ import annotations

import orjson
import pytest

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
