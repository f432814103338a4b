"""A lean HTTP/1.1 client for the hot path: asyncio transports, httptools parsing, keep-alive pool.

Why not aiohttp: measured on one core, aiohttp's client spends ~300 us of CPU per
proxied request, more than the whole simulated upstream and most of the gateway's
budget (bench/README.md). The wire work here is done by httptools (the C parser
uvicorn uses) and asyncio's transports (TLS included); what is left is a pool and
a little bookkeeping, ~10x cheaper per request.

Scope, deliberately: one origin per pool (a provider's base URL), POST/GET with a
known body, responses with Content-Length, chunked or close-delimited bodies,
keep-alive reuse, per-request connect/read/total timeouts, streaming reads with
back-pressure. No redirects, cookies, proxies or compression: OpenAI-compatible
APIs need none of them.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

_HIGH_WATER = 256 * 1024
_TOTAL_TIMEOUT = "the upstream did not answer within the total timeout"


class HttpError(Exception):
    """Base of the client's failures; `sent` says whether any response byte had arrived."""


class ConnectError(HttpError):
    pass


class ConnectTimeout(ConnectError):
    """The peer never accepted: a timeout, not a refusal (the client is told 504, not 503)."""


class ReadTimeout(HttpError):
    pass


class ProtocolError(HttpError):
    pass


class ConnectionClosed(HttpError):
    """The peer closed the connection before the response was complete."""

    def __init__(self, message: str, got_bytes: bool) -> None:
        super().__init__(message)
        self.got_bytes = got_bytes


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int
    prefix: str

    @classmethod
    def parse(cls, base_url: str) -> Origin:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


class _Connection(asyncio.Protocol):
    """One keep-alive connection; carries one response at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        # Kept, because asyncio.get_running_loop() makes a getpid() system call on every use (CPython 3.11).
        self._loop = asyncio.get_running_loop()
        self.closed = False
        self.idle_since = time.monotonic()
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self.complete = False
        self._keep_alive = False
        self.got_bytes = False
        self._headers_done = False
        self._error: HttpError | None = None
        self._wake: asyncio.Future[None] | None = None
        self._paused = False

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"malformed HTTP response ({exc})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            if self._headers_done and not self._parser_knows_length():
                # A close-delimited body ends with the connection.
                self.on_message_complete()
            else:
                self._fail(ConnectionClosed("connection closed before the response was complete", self.got_bytes))
        self._signal()

    def pause_writing(self) -> None:  # the request bodies we send are small
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks --------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self._headers_done = True
        self._signal()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._signal()

    def on_message_complete(self) -> None:
        # Asked now: llhttp forgets the message's keep-alive flag once it resets for the next one.
        self._keep_alive = self._parser.should_keep_alive()
        self.complete = True
        self._signal()

    # -- helpers ----------------------------------------------------------------------------
    def _parser_knows_length(self) -> bool:
        return "content-length" in self.headers or "chunked" in self.headers.get("transfer-encoding", "")

    def _fail(self, error: HttpError) -> None:
        if self._error is None:
            self._error = error
        if self.transport is not None:
            self.transport.close()
        self._signal()

    def _signal(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _wait(self, wait_s: float | None, deadline: float | None) -> None:
        # A bare future and one timer handle: asyncio.wait_for would spawn a task per read, and
        # asyncio.timeout around the whole request would cost a second timer and a task lookup.
        # The timer fires at whichever comes first, the read timeout or the request's deadline.
        message = "no data from upstream within the read timeout"
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReadTimeout(_TOTAL_TIMEOUT)
            if wait_s is None or left < wait_s:
                wait_s, message = left, _TOTAL_TIMEOUT
        wake = self._wake = self._loop.create_future()
        timer = None if wait_s is None else self._loop.call_later(wait_s, _expire, wake, message)
        try:
            await wake
        finally:
            self._wake = None
            if timer is not None:
                timer.cancel()

    def send(self, payload: bytes) -> None:
        assert self.transport is not None
        self._reset()
        self._parser = httptools.HttpResponseParser(self)
        self.transport.write(payload)

    async def read_head(self, wait_s: float | None, deadline: float | None) -> None:
        while not self._headers_done:
            if self._error is not None:
                raise self._error
            await self._wait(wait_s, deadline)
        if self._error is not None and not self._chunks:
            raise self._error

    async def read_chunk(self, wait_s: float | None, deadline: float | None) -> bytes:
        """The next body bytes; b"" once the body is complete."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered < _HIGH_WATER // 2 and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return chunk
            if self.complete:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait(wait_s, deadline)

    async def read_all(self, wait_s: float | None, deadline: float | None) -> bytes:
        parts = []
        while chunk := await self.read_chunk(wait_s, deadline):
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    @property
    def reusable(self) -> bool:
        return self.complete and self._keep_alive and self._error is None and not self.closed

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.closed = True


def _expire(wake: asyncio.Future[None], message: str) -> None:
    if not wake.done():
        wake.set_exception(ReadTimeout(message))


class Response:
    """A response whose head has arrived; read the body, then `release()` (or `close()`)."""

    def __init__(self, pool: Pool, conn: _Connection, read_timeout: float | None, deadline: float | None) -> None:
        self._pool = pool
        self._conn = conn
        self._read_timeout = read_timeout
        # time.monotonic() by which the whole body must have arrived; None for no bound
        # (a stream, once its first event is in, may run as long as events keep coming).
        self.deadline = deadline
        self._done = False
        self.status = conn.status
        self.headers = conn.headers

    async def read(self) -> bytes:
        try:
            return await self._conn.read_all(self._read_timeout, self.deadline)
        finally:
            self.release()

    async def read_chunk(self) -> bytes:
        chunk = await self._conn.read_chunk(self._read_timeout, self.deadline)
        if not chunk:
            self.release()
        return chunk

    def release(self) -> None:
        if not self._done:
            self._done = True
            self._pool.release(self._conn)

    def close(self) -> None:
        """Abandon the response: the connection cannot be reused and is closed at once."""
        if not self._done:
            self._done = True
            self._conn.close()
            self._pool.release(self._conn)


class Pool:
    def __init__(
        self, base_url: str, *, limit: int, connect_timeout: float, idle_timeout_s: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.origin = Origin.parse(base_url)
        self._limit = limit
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout_s
        self._ssl = ssl_context or (ssl.create_default_context() if self.origin.scheme == "https" else None)
        self._idle: deque[_Connection] = deque()
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def ready(self) -> bool:
        return not self._closed

    async def _connect(self, deadline: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        limit = self._connect_timeout
        on_expiry: HttpError = ConnectTimeout("connect timeout")
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left < limit:
            limit, on_expiry = max(0.0, left), ReadTimeout(_TOTAL_TIMEOUT)
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    _Connection, self.origin.host, self.origin.port, ssl=self._ssl,
                    server_hostname=self.origin.host if self._ssl else None,
                ),
                limit,
            )
        except TimeoutError:
            raise on_expiry from None
        except OSError as exc:
            raise ConnectError(f"connect failed ({type(exc).__name__})") from None
        return conn

    async def _acquire(self, deadline: float | None) -> tuple[_Connection, bool]:
        """A connection and whether it was reused from the idle set."""
        if self._closed:
            raise ConnectError("client is closed")
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < self._idle_timeout:
                return conn, True
            conn.close()
            self._open -= 1
        while self._open >= self._limit:
            await self._wait_for_slot(deadline)
            if self._idle:
                return await self._acquire(deadline)
        self._open += 1
        try:
            return await self._connect(deadline), False
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    async def _wait_for_slot(self, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.append(waiter)
        timer = None
        if deadline is not None:
            timer = loop.call_later(max(0.0, deadline - time.monotonic()), _expire, waiter, _TOTAL_TIMEOUT)
        try:
            await waiter
        except BaseException:
            # Woken and then cancelled (or timed out): pass the wake-up on to the next waiter.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._wake_one()
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def release(self, conn: _Connection) -> None:
        if conn.reusable and not self._closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
            self._open -= 1
        self._wake_one()

    async def request(
        self, head: bytes, body: bytes, *, read_timeout: float | None, deadline: float | None = None
    ) -> Response:
        """Send `head` (request line and headers, without the final CRLF) and `body`; wait for the response head.

        `deadline` (time.monotonic()) bounds the whole exchange: waiting for a pooled
        connection, connecting, the response head and, through the Response, its body.

        A keep-alive connection the server closed while idle fails before any response
        byte; that one case is retried once on a fresh connection, as the request cannot
        have been processed.
        """
        payload = head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        for attempt in (0, 1):
            conn, reused = await self._acquire(deadline)
            try:
                conn.send(payload)
                await conn.read_head(read_timeout, deadline)
            except ConnectionClosed as exc:
                conn.close()
                self.release(conn)
                if reused and not exc.got_bytes and attempt == 0:
                    continue
                raise
            except BaseException:
                conn.close()
                self.release(conn)
                raise
            return Response(self, conn, read_timeout, deadline)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
            self._open -= 1
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(ConnectError("client is closed"))
