"""Per-connection limits uvicorn does not set: how long a request may take to arrive, how big its head may be,
and how many connections one worker holds.

uvicorn (httptools) already closes a keep-alive connection idle between requests (`timeout_keep_alive`), caps
the body only as flow control, and can answer 503 beyond `limit_concurrency` (plain text, counted per task).
It has no deadline for a request's head or body once its first byte arrived, no header-size limit, and nothing
for a connection that never sends a byte: a slowloris client holds a connection forever. `GuardedProtocol`
adds, each answered in OpenAI's error shape and closing the connection:

    header_timeout_s   first byte (or the connection's opening) -> end of headers      408 (closed silently
                                                                                       if nothing was sent)
    body_timeout_s     end of headers -> last body byte                                 408
    max_header_bytes   request line and headers together                               431
    max_connections    open connections per worker process                             503 with Retry-After

A request that arrives in one read, as nearly all do, never arms a timer: the deadlines cost only the requests
that trickle in. On a body deadline the endpoint is told through the scope (`BODY_TIMED_OUT`), so it answers
408 in its own dialect and records it; if it has not answered within a second, the protocol does.
"""

from __future__ import annotations

import asyncio
import functools
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import httptools
import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from config.schema import ServerConfig

# Set in the request's scope when its body missed the deadline (read by gateway.http.read_body).
BODY_TIMED_OUT = "cutover.body_timed_out"
# How long the endpoint has to answer a timed-out body itself before the protocol answers for it.
_ENDPOINT_GRACE_S = 1.0

Phase = Literal["opened", "headers", "body", "complete"]


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int
    max_connections: int

    @classmethod
    def of(cls, server: ServerConfig) -> ConnectionLimits:
        return cls(server.header_timeout_s, server.body_timeout_s, server.max_header_bytes,
                   server.max_connections or default_max_connections())


def default_max_connections() -> int:
    """Half the open-file limit (each client connection may hold an upstream one), less a margin."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 16384
    return max(64, (soft - 100) // 2)


def protocol_factory(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """What uvicorn.Config takes as `http`. A partial, not a class made on the fly, so that it pickles into
    worker processes; uvicorn only ever calls it, which is all its `type[Protocol]` hint needs."""
    return cast("type[asyncio.Protocol]", functools.partial(GuardedProtocol, limits=limits))


class _Refused(Exception):
    def __init__(self, status: int, reason: bytes, body: bytes, extra: bytes = b"") -> None:
        super().__init__(status)
        self.status, self.reason, self.body, self.extra = status, reason, body, extra


def _error(message: str, type_: str, code: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's protocol with the limits above. It follows a request from uvicorn's own state (the cycle it
    starts at the end of the headers, the cycle's `more_body`), adding two parser callbacks, not one per
    header: about 1 us a request (bench/README.md, "Connection limits")."""

    def __init__(
        self, config: Config, server_state: ServerState, app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None, *, limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = limits
        self._timer: asyncio.TimerHandle | None = None
        self._timed_phase: Phase | None = None
        self._phase: Phase = "opened"
        # The cycle current when the newest request began: its headers are complete once uvicorn replaced it.
        self._begun_after: Any = None
        self._in_message = False
        self._read_len = 0
        # Bytes of earlier reads that ended inside this request's head.
        self._head_reads = 0
        self._over_capacity = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._over_capacity = len(self.connections) >= self._limits.max_connections
        super().connection_made(transport)
        self._rearm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._over_capacity:
            self._refuse(_Refused(503, b"Service Unavailable", _error(
                "This gateway process holds as many connections as it may; retry shortly.",
                "service_unavailable", "too_many_connections"), b"retry-after: 1\r\n"))
            return
        self._unset_keepalive_if_required()
        self._read_len = len(data)
        if self._in_message and self.cycle is self._begun_after:
            # A head continued from earlier reads: every byte of this one counts toward it. (The read that began
            # the request may also hold the end of the one before, so it is counted exactly instead.)
            self._head_reads += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Refused):
                self._refuse(exc.__context__)
                return
            self.logger.warning("Invalid HTTP request received.")
            self._refuse(_Refused(400, b"Bad Request", _error(
                "The request is not valid HTTP/1.1.", "invalid_request_error", "invalid_http")))
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self._cancel_timer()  # the connection is another protocol's now
                self.handle_websocket_upgrade()
                return
            # Served as an ordinary request (h2c and the like), so its deadlines are followed like any other's.
            self._unsupported_upgrade_warning()
        if self._in_message:
            cycle = self.cycle
            if cycle is self._begun_after:
                self._phase = "headers"
                # Never finished, so never counted whole: a lower bound of it already says it is too big.
                if max(self._head_reads, self._head_so_far()) > self._limits.max_header_bytes:
                    self._refuse(self._head_too_large())
                    return
            elif cycle.more_body:
                self._phase = "body"
            else:
                self._phase = "complete"
                self._in_message = False
        elif self._timer is None and (self.cycle is None or self.cycle.response_complete):
            # Bytes that start no request (blank lines) cancelled uvicorn's keep-alive timer: bound the wait again.
            self._phase = "opened"
        if self._phase != self._timed_phase and (self._timer is not None or self._phase != "complete"):
            self._rearm()

    def on_message_begin(self) -> None:
        self._begun_after = self.cycle
        self._in_message = True
        self._head_reads = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        # A head that came in one read no bigger than the limit cannot exceed it: only count the others.
        if (self._read_len > self._limits.max_header_bytes or self._head_reads) and (
                self._head_so_far() > self._limits.max_header_bytes):
            raise self._head_too_large()
        super().on_headers_complete()

    def _head_so_far(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _head_too_large(self) -> _Refused:
        return _Refused(431, b"Request Header Fields Too Large", _error(
            f"The request line and headers exceed {self._limits.max_header_bytes} bytes.",
            "invalid_request_error", "request_header_fields_too_large"))

    # --- deadlines --------------------------------------------------------------------------------------------

    def _rearm(self) -> None:
        """One timer for the phase the connection is in, started when the phase began; none once the request
        is complete (between requests, uvicorn's keep-alive timer closes an idle connection)."""
        self._cancel_timer()
        phase = self._phase
        if phase in ("opened", "headers"):
            self._start_timer(phase, self._limits.header_timeout_s, self._head_late)
        elif phase == "body" and not self.pipeline:
            # A pipelined request waiting its turn is not read meanwhile (uvicorn pauses reading): its body's
            # deadline starts once it is the one being served and more of it arrives.
            self._start_timer(phase, self._limits.body_timeout_s, self._body_late)

    def _start_timer(self, phase: Phase, delay: float, callback: Callable[[], None]) -> None:
        self._timer = self.loop.call_later(delay, callback)
        self._timed_phase = phase

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timed_phase = None

    def _head_late(self) -> None:
        self._timer = None
        if self._phase == "opened":
            self.transport.close()  # nothing was asked, so there is nothing to answer
            return
        self._refuse(_Refused(408, b"Request Timeout", _error(
            f"The request headers did not arrive within {self._limits.header_timeout_s:g} s.",
            "invalid_request_error", "request_timeout")))

    def _body_late(self) -> None:
        self._timer = None
        cycle = self.cycle
        if cycle is None or self.transport.is_closing():
            return
        if cycle.response_started:
            # Answered without its body (a 401 or 413 before reading it): the rest will never be read, so the
            # connection ends with that answer rather than waiting for bytes nobody wants.
            if cycle.response_complete:
                self.transport.close()
            else:
                cycle.keep_alive = False
            return
        # The endpoint answers in its own dialect: tell it, wake its read, and close after its answer.
        cycle.scope[BODY_TIMED_OUT] = True  # type: ignore[literal-required]
        cycle.keep_alive = False
        cycle.message_event.set()
        self._timer = self.loop.call_later(_ENDPOINT_GRACE_S, self._body_unanswered)

    def _body_unanswered(self) -> None:
        self._timer = None
        cycle = self.cycle
        if cycle is None or cycle.response_started or self.transport.is_closing():
            return
        cycle.disconnected = True
        self._refuse(_Refused(408, b"Request Timeout", _error(
            f"The request body did not arrive within {self._limits.body_timeout_s:g} s.",
            "invalid_request_error", "request_timeout")))

    def _refuse(self, refused: _Refused) -> None:
        self._cancel_timer()
        if self.transport.is_closing():
            return
        earlier = self.cycle
        if earlier is not None and earlier.response_started and not earlier.response_complete:
            # An earlier request's answer is still being sent: the refusal cannot go in the middle of it. That
            # answer ends the connection instead, and nothing more is read meanwhile.
            earlier.keep_alive = False
            self.flow.pause_reading()
            return
        head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n" % (
            refused.status, refused.reason, len(refused.body))
        self.transport.write(head + refused.extra + b"\r\n" + refused.body)
        self.transport.close()
