"""providers.http1's timeouts against raw asyncio servers on 127.0.0.1 that script each byte's timing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from providers.http1 import Pool, ReadTimeout

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"


class RawServer:
    """Answers each connection with `script`; the test sets `release` to end any script still waiting."""

    def __init__(self) -> None:
        self.script: Script | None = None
        self.release = asyncio.Event()
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        assert self.script is not None
        try:
            await self.script(reader, writer)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def silent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A script: read the request, never answer."""
        await _read_request(reader)
        await self.release.wait()

    @property
    def base_url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"


@pytest_asyncio.fixture
async def raw() -> AsyncIterator[RawServer]:
    fake = RawServer()
    fake.server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    try:
        yield fake
    finally:
        fake.release.set()
        fake.server.close()
        await fake.server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
    await reader.readexactly(length)


def _ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def test_deadline_bounds_a_body_that_trickles_within_the_read_timeout(raw: RawServer) -> None:
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        # One byte every 50 ms: never silent for the read timeout, but never finished either.
        while not raw.release.is_set():
            writer.write(b"x")
            await writer.drain()
            try:
                await asyncio.wait_for(raw.release.wait(), 0.05)
            except TimeoutError:
                pass

    raw.script = trickle
    pool = Pool(raw.base_url, limit=2, connect_timeout=2.0)
    started = time.monotonic()
    resp = await pool.request(HEAD, b"{}", read_timeout=1.0, deadline=started + 0.3)
    with pytest.raises(ReadTimeout, match="total timeout"):
        await resp.read()
    assert time.monotonic() - started < 1.0  # the deadline fired, not the read timeout
    await pool.close()


async def test_deadline_bounds_the_wait_for_the_response_head(raw: RawServer) -> None:
    raw.script = raw.silent
    pool = Pool(raw.base_url, limit=2, connect_timeout=2.0)
    with pytest.raises(ReadTimeout, match="total timeout"):
        await pool.request(HEAD, b"{}", read_timeout=5.0, deadline=time.monotonic() + 0.2)
    await pool.close()


async def test_read_timeout_applies_without_a_deadline(raw: RawServer) -> None:
    raw.script = raw.silent
    pool = Pool(raw.base_url, limit=2, connect_timeout=2.0)
    with pytest.raises(ReadTimeout, match="read timeout"):
        await pool.request(HEAD, b"{}", read_timeout=0.2)
    await pool.close()


async def test_deadline_bounds_the_wait_for_a_pool_slot_and_the_slot_stays_usable(raw: RawServer) -> None:
    answer, seen = asyncio.Event(), asyncio.Event()

    async def first_hangs(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            seen.set()
            await answer.wait()
            writer.write(_ok(b"{}"))
            await writer.drain()

    raw.script = first_hangs
    pool = Pool(raw.base_url, limit=1, connect_timeout=2.0)
    busy = asyncio.create_task(pool.request(HEAD, b"{}", read_timeout=5.0))
    await seen.wait()  # the only connection the pool may open is now busy
    with pytest.raises(ReadTimeout, match="total timeout"):
        await pool.request(HEAD, b"{}", read_timeout=5.0, deadline=time.monotonic() + 0.2)
    answer.set()
    assert await (await busy).read() == b"{}"
    # The timed-out waiter neither took the slot nor lost it: the next request reuses the connection.
    assert await (await pool.request(HEAD, b"{}", read_timeout=5.0)).read() == b"{}"
    assert raw.connections == 1
    await pool.close()


async def test_a_finished_response_returns_its_connection_before_the_deadline(raw: RawServer) -> None:
    async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            writer.write(_ok(b'{"ok": true}'))
            await writer.drain()

    raw.script = answers
    pool = Pool(raw.base_url, limit=1, connect_timeout=2.0)
    for _ in range(3):
        resp = await pool.request(HEAD, b"{}", read_timeout=1.0, deadline=time.monotonic() + 1.0)
        assert await resp.read() == b'{"ok": true}'
    assert raw.connections == 1
    await pool.close()
