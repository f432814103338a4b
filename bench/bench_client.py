"""A small, fast closed-loop HTTP/1.1 load generator for the gateway benchmark.

Each of ``concurrency`` keep-alive connections has exactly one request in
flight; the next one is written from the parser callback that completes the
previous response, so no coroutine or future is created per request. Responses
are parsed with httptools (the C parser uvicorn uses), on uvloop. Per request it
records the latency (request written -> response complete) and, for streams,
the time to the first body byte (the first SSE event).
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from typing import cast

import httptools

_DONE_TAIL = b"data: [DONE]\n\n"


def build_request(host: str, port: int, path: str, body: bytes, api_key: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        f"Authorization: Bearer {api_key}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: */*\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


@dataclass
class RunResult:
    """One bounded run: per-request timings in nanoseconds and what went wrong."""

    latencies_ns: list[int] = field(default_factory=list)
    ttfb_ns: list[int] = field(default_factory=list)
    errors: int = 0
    bad_status: dict[int, int] = field(default_factory=dict)
    sse_frames: int = 0
    streams: int = 0
    wall_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def completed(self) -> int:
        return len(self.latencies_ns)

    @property
    def rps(self) -> float:
        return self.completed / self.wall_s if self.wall_s > 0 else 0.0


class _Budget:
    """Shared request budget of one run, and the future that ends it."""

    def __init__(self, total: int, result: RunResult, done: asyncio.Future[None], active: int) -> None:
        self.remaining = total
        self.result = result
        self.done = done
        self.active = active

    def take(self) -> bool:
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True

    def release(self) -> None:
        self.active -= 1
        if self.active <= 0 and not self.done.done():
            self.done.set_result(None)


class _Connection(asyncio.Protocol):
    def __init__(self, request: bytes, stream: bool | bytes) -> None:
        self.request = request
        self.stream = bool(stream)
        # A stream is complete when its body ends so: chat and completions end with [DONE]; a Responses
        # stream ends with its final typed event, so its caller passes the bytes that close an event.
        self.end = stream if isinstance(stream, bytes) else _DONE_TAIL
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.budget: _Budget | None = None
        self.started = 0
        self.first_body = 0
        self.tail = b""
        self.frames = 0
        self.busy = False
        self.lost = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but have its interface.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.busy:
            self._fail()

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        if not self.first_body:
            self.first_body = time.perf_counter_ns()
        if self.stream:
            self.frames += body.count(b"data: ")
            self.tail = (self.tail + body)[-len(self.end) :]

    def on_message_complete(self) -> None:
        end = time.perf_counter_ns()
        budget = self.budget
        assert budget is not None
        self.busy = False
        result = budget.result
        status = self.parser.get_status_code()
        if status != 200:
            result.bad_status[status] = result.bad_status.get(status, 0) + 1
            result.errors += 1
        elif self.stream and self.tail != self.end:
            result.errors += 1
        else:
            result.latencies_ns.append(end - self.started)
            if self.stream:
                result.ttfb_ns.append(self.first_body - self.started)
                result.sse_frames += self.frames
                result.streams += 1
        self.next()

    # driving
    def start(self, budget: _Budget) -> None:
        self.budget = budget
        self.next()

    def next(self) -> None:
        budget = self.budget
        assert budget is not None and self.transport is not None
        if self.lost or not budget.take():
            budget.release()
            return
        self.busy = True
        self.first_body = 0
        self.frames = 0
        self.tail = b""
        self.started = time.perf_counter_ns()
        self.transport.write(self.request)

    def _fail(self) -> None:
        self.busy = False
        self.lost = True
        if self.transport is not None:
            self.transport.close()
        if self.budget is not None:
            self.budget.result.errors += 1
            self.budget.release()


class LoadClient:
    """``concurrency`` keep-alive connections; ``await run(n)`` sends ``n`` requests over them."""

    def __init__(self, host: str, port: int, requests: list[tuple[bytes, bool | bytes]]) -> None:
        """``requests``: one ``(raw request, is_stream)`` per connection; for a stream that does not end with
        ``[DONE]``, the bytes it ends with instead of True."""
        self.host = host
        self.port = port
        self.requests = requests
        self.connections: list[_Connection] = []

    async def __aenter__(self) -> LoadClient:
        loop = asyncio.get_running_loop()
        for raw, stream in self.requests:
            _, proto = await loop.create_connection(functools.partial(_Connection, raw, stream), self.host, self.port)
            self.connections.append(proto)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for conn in self.connections:
            if conn.transport is not None:
                conn.transport.close()
        self.connections.clear()
        await asyncio.sleep(0)

    async def run(self, total: int, timeout_s: float) -> RunResult:
        """Send ``total`` requests (fewer if connections die); gives up after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        result = RunResult()
        live = [c for c in self.connections if not c.lost]
        if not live:
            raise RuntimeError("every benchmark connection was closed by the server")
        done: asyncio.Future[None] = loop.create_future()
        budget = _Budget(total, result, done, len(live))
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for conn in live:
            conn.start(budget)
        try:
            await asyncio.wait_for(done, timeout_s)
        except TimeoutError:
            budget.remaining = 0
            result.errors += sum(1 for c in live if c.busy)
            for conn in live:
                conn.lost = True
                if conn.transport is not None:
                    conn.transport.close()
        result.wall_s = time.perf_counter() - t0
        result.client_cpu_s = time.process_time() - cpu0
        return result
