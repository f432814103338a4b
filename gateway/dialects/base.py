"""The inbound dialect seam of the pipeline.

The pipeline parses a body with its endpoint's dialect into a `ClientRequest`
whose payload is canonical (OpenAI Chat Completions, or embeddings), and renders
what comes back with the same dialect: the answer's body, each stream event as a
frame, the stream's last frames, and every error in the caller's own error shape.
The canonical dialect itself passes bytes through untouched: that is the fast path. Another dialect
also carries the client's own request (`native`), for targets whose upstream speaks it
(routing.wire): their answers pass through as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from gateway.errors import GatewayError
from providers.base import UpstreamReply
from routing.wire import NativeForm


@dataclass(frozen=True, slots=True)
class Turn:
    """One Responses API call: its id (chosen before any upstream is asked, so the answer, its events and the
    stored conversation share it), the client's body and this turn's input as items."""

    response_id: Final[str]
    created_at: Final[int]
    data: Final[Mapping[str, Any]]
    items: Final[tuple[dict[str, Any], ...]]
    # The earlier turns' items, once `previous_response_id` was looked up.
    history: Final[tuple[dict[str, Any], ...]] = ()

    @property
    def store(self) -> bool:
        return self.data.get("store", True) is not False  # OpenAI's default: stored


@dataclass(slots=True)
class ClientRequest:
    model: Final[str]
    # Canonical, as parsed once; the model is replaced per target when the call is prepared.
    payload: Final[dict[str, Any]]
    stream: Final[bool]
    # The client's body size: a bound on its tokens, so small requests skip counting.
    body_size: Final[int]
    max_output_tokens: Final[int]
    # Streams: the client asked for the usage chunk (the gateway always asks upstream for it).
    wants_usage: Final[bool]
    # A dialect that is not canonical: the request as the client sent it, for upstreams that speak it.
    native: Final[NativeForm | None] = None
    # A Responses API turn (its answer is kept for previous_response_id).
    turn: Final[Turn | None] = None


class StreamFrames(Protocol):
    """Turns one stream's upstream events into client frames; one instance per stream (it may keep state)."""

    content_type: bytes
    # Every upstream event goes out as `data: <event>` except usage chunks (the fast path, no call per event);
    # a translating dialect says False and frames every event itself.
    passthrough: bool

    def event(self, data: bytes, usage_chunk: Mapping[str, Any] | None) -> bytes | None:
        """The frame for one upstream data payload (`usage_chunk`: it parsed, when it carries usage);
        None to leave it out."""
        ...

    def end(self, trailer: bytes) -> bytes:
        """The last bytes after a complete stream; `trailer` is an SSE comment the gateway adds (the cost)."""
        ...

    def broken(self) -> bytes:
        """The last bytes when the upstream broke off: an error, never a clean-looking end."""
        ...

    async def settle(self) -> None:
        """The upstream finished, before `end`: whatever must be kept is kept before the client sees the end."""
        ...


class InboundDialect(Protocol):
    # Metric label and log field of the endpoint ("chat", "embeddings").
    endpoint: str
    # The canonical upstream call the requests become.
    upstream_path: str
    # Whether requests are fitted to a context window and may be copied to a shadow target.
    fits_context: bool
    shadowable: bool

    def parse(self, body: bytes) -> ClientRequest: ...

    def answer_body(self, reply: UpstreamReply, native: bool) -> bytes:
        """`native`: the upstream was sent the client's own dialect, so its answer is already in it."""
        ...

    async def answer(self, request: ClientRequest, reply: UpstreamReply, native: bool) -> bytes:
        """`answer_body` for a request with a turn, kept (for previous_response_id) before it is sent."""
        ...

    def stream_frames(self, request: ClientRequest, native: bool) -> StreamFrames: ...

    def error_body(self, error: GatewayError) -> bytes: ...

    def upstream_error_body(self, status: int, body: bytes) -> bytes:
        """An upstream's own 4xx about the request, in the caller's error shape."""
        ...
