"""What the client gets when no target answered: one error, in the gateway's exception tree.

The dispatcher reports what happened (`Undelivered`: every attempt, the last
failure); this module decides what the client is told. An upstream 4xx about the
request itself goes back as the upstream sent it; otherwise the last failure of
the last target tried sets the error; a request no target could take (every one
cooling down, or too long for each context window) says so.
"""

from __future__ import annotations

import math

from gateway.errors import (
    BadGateway,
    ContextLengthExceeded,
    GatewayError,
    GatewayTimeout,
    InvalidRequest,
    RateLimited,
    ServiceUnavailable,
    UpstreamPassthrough,
)
from providers.dispatch import Undelivered
from providers.errors import (
    ProviderError,
    RequestUnsendable,
    RunFailed,
    UpstreamConnectError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from routing.context import Overflow
from routing.wire import Unhonoured


def final_error(exc: ProviderError | None, alias: str) -> GatewayError:
    """The error the client gets once every target has failed."""
    if isinstance(exc, UpstreamStatusError):
        if exc.status == 429:
            wait = exc.retry_after_s if exc.retry_after_s is not None else 1.0
            seconds = max(1, math.ceil(wait))
            return RateLimited(
                f"The upstream providers for '{alias}' are rate-limiting requests; retry after {seconds} s.",
                headers={"retry-after": str(seconds)},
            )
        if exc.status in (401, 403):
            return BadGateway(f"The upstream provider for '{alias}' rejected the gateway's credentials.")
        if exc.status == 408:
            return GatewayTimeout(f"The upstream provider for '{alias}' timed out.")
        if exc.status == 503:
            return ServiceUnavailable(f"Every upstream provider for '{alias}' is unavailable.")
        return BadGateway(f"The upstream provider for '{alias}' failed with status {exc.status}.")
    if isinstance(exc, RequestUnsendable):
        return GatewayError(f"The gateway could not encode the request for '{alias}'.")
    if isinstance(exc, RunFailed):
        return ServiceUnavailable(f"'{alias}' could not answer: {exc}")
    if isinstance(exc, UpstreamTimeout):
        return GatewayTimeout(f"The upstream provider for '{alias}' did not answer in time.")
    if isinstance(exc, UpstreamConnectError):
        return ServiceUnavailable(f"No upstream provider for '{alias}' could be reached.")
    return BadGateway(f"The upstream provider for '{alias}' sent an invalid response.")


def unhonoured_error(unhonoured: Unhonoured, dialect: str) -> InvalidRequest:
    target = unhonoured.target
    return InvalidRequest(
        f"'{unhonoured.field}' needs an upstream that serves the {dialect} API itself, and target "
        f"'{target.model}' of provider '{target.provider}' is reached through Chat Completions.",
        param=unhonoured.field, code="unsupported_parameter",
    )


def context_length_exceeded(overflow: Overflow) -> ContextLengthExceeded:
    requested = overflow.prompt_tokens + overflow.max_output_tokens
    return ContextLengthExceeded(
        f"This model's maximum context length is {overflow.window} tokens. However, you requested "
        f"{requested} tokens ({overflow.prompt_tokens} in the messages, {overflow.max_output_tokens} in the "
        "completion). Please reduce the length of the messages or completion.",
        param="messages",
    )


def undelivered_error(result: Undelivered, alias: str, overflow: Overflow | None) -> Exception:
    """`GatewayError`, or `UpstreamPassthrough` for an upstream's own answer about the request."""
    error = result.error
    if error is not None and result.client_fault:
        assert isinstance(error, UpstreamStatusError)
        return UpstreamPassthrough(error.status, error.body)
    if error is not None:
        return final_error(error, alias)
    if overflow is not None:
        return context_length_exceeded(overflow)
    return ServiceUnavailable(
        f"Every upstream target for '{alias}' is cooling down after repeated failures; retry shortly.",
        headers={"retry-after": "1"},
    )
