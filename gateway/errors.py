"""One exception tree for everything the gateway answers with an error.

    GatewayError (500 api_error)                     never raised on purpose; the last resort
    ├── InvalidRequest (400 invalid_request_error)   bad JSON, missing or mistyped fields
    │   └── ContextLengthExceeded (400, code context_length_exceeded)
    ├── AuthenticationFailed (401 authentication_error)
    ├── PermissionDenied (403 permission_error)
    ├── NotFound (404 invalid_request_error)         unknown model / route
    ├── MethodNotAllowed (405 invalid_request_error)
    ├── RequestTimeout (408 invalid_request_error)   the body did not arrive in time (gateway.connection)
    ├── PayloadTooLarge (413 invalid_request_error)
    ├── RateLimited (429 rate_limit_error)           upstreams rate-limited after retries
    ├── BadGateway (502 upstream_error)              upstream answered garbage or an error
    ├── ServiceUnavailable (503 service_unavailable) every target down or cooling down
    └── GatewayTimeout (504 timeout_error)           upstream timed out

Each renders as OpenAI's `{"error": {"message", "type", "param", "code"}}`, so
the OpenAI SDKs raise their matching exception class. Messages never carry
upstream URLs or keys.
"""

from __future__ import annotations

import orjson


class GatewayError(Exception):
    status = 500
    type = "api_error"
    code: str | None = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def to_json(self) -> bytes:
        return orjson.dumps(self.body())


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code: str | None = None


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTimeout(GatewayError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class BadGateway(GatewayError):
    status = 502
    type = "upstream_error"
    code = "bad_gateway"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "no_healthy_upstream"


class GatewayTimeout(GatewayError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


class UpstreamPassthrough(Exception):
    """An upstream 4xx that is the client's own fault: returned as the upstream sent it."""

    def __init__(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        super().__init__(f"upstream answered {status}")
        self.status = status
        self.body = body
        self.content_type = content_type
