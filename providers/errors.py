"""How an upstream call fails, and the one mapping from a failure to an HTTP status.

    ProviderError                  an upstream call did not give a usable answer
    ├── UpstreamConnectError       could not connect (retryable)                  503
    ├── UpstreamTimeout            connect/read/total timeout (retryable)         504
    ├── UpstreamStatusError        answered with a non-2xx status                 its status
    │                              (retryable for 408/429/5xx)
    ├── UpstreamProtocolError      answered 2xx with something that is not the API 502
    ├── UpstreamStreamBroken       a stream ended before `data: [DONE]`           502
    ├── RunFailed                  a provider doing its own work could not answer 503
    └── RequestUnsendable          the gateway could not encode its own request   500
                                   (never sent: no sign of the target's health)

`status_of` is what an attempt record, a migration arm and a shadow copy count a
failure as; the client-facing error (message, headers) is built from it at the edge.
"""

from __future__ import annotations


class ProviderError(Exception):
    retryable: bool = True
    kind: str = "error"


class UpstreamConnectError(ProviderError):
    kind = "connect"


class UpstreamTimeout(ProviderError):
    kind = "timeout"


class UpstreamProtocolError(ProviderError):
    kind = "protocol"


class UpstreamStreamBroken(ProviderError):
    kind = "stream_broken"


class RunFailed(ProviderError):
    """A provider that does its own work (the plan-and-execute meta-model) could not answer.
    Never retried: the run may already have spent money."""

    retryable = False
    kind = "run_failed"


class RequestUnsendable(ProviderError):
    """The request could not be encoded for the upstream. Parsing bounds what a client may send
    (gateway.dialects.openai.MAX_NESTING), so this is the gateway's own fault, never the target's."""

    retryable = False
    kind = "unsendable"


class UpstreamStatusError(ProviderError):
    def __init__(self, status: int, body: bytes, retry_after_s: float | None = None) -> None:
        super().__init__(f"upstream answered {status}")
        self.status = status
        self.body = body
        self.retry_after_s = retry_after_s
        self.retryable = status in (408, 429) or status >= 500
        self.kind = "rate_limited" if status == 429 else f"http_{status // 100}xx"


_STATUS_OF_KIND: dict[type[ProviderError], int] = {
    UpstreamConnectError: 503,
    UpstreamTimeout: 504,
    RunFailed: 503,
    RequestUnsendable: 500,
}


def status_of(error: ProviderError) -> int:
    """The HTTP status a failure amounts to: the upstream's own, else 503 unreachable, 504 timed out, 502 garbage."""
    if isinstance(error, UpstreamStatusError):
        return error.status
    return _STATUS_OF_KIND.get(type(error), 502)


def is_client_fault(error: ProviderError) -> bool:
    """An upstream 4xx about the request itself: the client's own error, and no sign of an unhealthy target."""
    return isinstance(error, UpstreamStatusError) and 400 <= error.status < 500 and error.status not in (
        401, 403, 408, 429)
