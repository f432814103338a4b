"""What every provider offers the gateway, and how upstream failures are told apart.

    ProviderError                  an upstream call did not give a usable answer
    ├── UpstreamConnectError       could not connect (retryable)
    ├── UpstreamTimeout            connect/read/total timeout (retryable)
    ├── UpstreamStatusError        answered with a non-2xx status (retryable for 408/429/5xx)
    ├── UpstreamProtocolError      answered 2xx with something that is not the API (garbage)
    └── UpstreamStreamBroken       a stream ended before `data: [DONE]`
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol


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


class UpstreamStatusError(ProviderError):
    def __init__(self, status: int, body: bytes, retry_after_s: float | None = None) -> None:
        super().__init__(f"upstream answered {status}")
        self.status = status
        self.body = body
        self.retry_after_s = retry_after_s
        self.retryable = status in (408, 429) or status >= 500
        self.kind = "rate_limited" if status == 429 else f"http_{status // 100}xx"


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """One call to make: `payload` is the parsed client body with the upstream model set."""

    path: str  # "/chat/completions", "/embeddings"
    payload: dict[str, Any]
    stream: bool
    request_id: str
    # Only providers that run work of their own read these (the meta-model's idempotent runs).
    idempotency_key: str | None = None
    client: str | None = None


@dataclass(slots=True)
class UpstreamReply:
    status: int
    body: bytes
    content_type: str
    # The body parsed once, so the gateway can read usage without parsing again.
    data: dict[str, Any] = field(default_factory=dict)
    # Set by providers that account for their own spend (the meta-model's summed calls).
    known_cost: Decimal | None = None


class UpstreamStream(Protocol):
    """An open upstream stream whose status was 2xx; SSE data payloads as raw bytes."""

    def batches(self) -> AsyncIterator[list[bytes]]: ...

    def events(self) -> AsyncIterator[bytes]: ...

    def abort(self) -> None: ...

    async def aclose(self) -> None: ...


class Provider(Protocol):
    name: str

    @property
    def ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, request: UpstreamRequest) -> UpstreamReply: ...

    async def open_stream(self, request: UpstreamRequest) -> UpstreamStream: ...
