"""What every provider offers the gateway: the provider dialect adapter seam.

A provider takes an `UpstreamRequest` whose payload is in the gateway's canonical
dialect (OpenAI Chat Completions, or embeddings) and answers in it: an
OpenAI-compatible upstream is the identity adapter (bytes pass through untouched),
the simulator is one behind a loopback socket, and the plan-and-execute meta-model
is one that does its own work. A provider that speaks another wire dialect
translates inside its adapter, so nothing above providers/ changes. How failures
are told apart is in providers.errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol


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
