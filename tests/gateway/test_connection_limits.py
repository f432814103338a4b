"""Slow and oversized requests through raw sockets: each is cut off with a clear answer, and holds no
connection past its deadline (gateway/connection.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from gateway.connection import ConnectionLimits, protocol_factory
from simulator import BackgroundSimulator
from tests.gateway.conftest import GatewayFactory
from tests.gateway.helpers import HELLO, auth, route, sdk, upstream
from tests.support import BackgroundGateway, free_port, wait_for

LIMITS = {"header_timeout_s": 0.5, "body_timeout_s": 0.5, "max_header_bytes": 4096, "max_connections": 6}


@pytest.fixture
def gw(sim: BackgroundSimulator, make_gateway: GatewayFactory) -> BackgroundGateway:
    return make_gateway({"sim": upstream(sim)}, {"chat": route(("sim", "sim-chat"))}, server=LIMITS)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded by the socket's timeout)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def read_response(sock: socket.socket) -> bytes:
    """One whole response on a keep-alive connection: its head, then content-length bytes of body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed before a response"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    sizes = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length = int(sizes[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def answer(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body) if body else None


def request_head(port: int, extra: str = "", length: int | None = None) -> bytes:
    size = f"content-length: {length}\r\n" if length is not None else ""
    key = auth()["Authorization"]
    return (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nauthorization: {key}\r\n"
            f"content-type: application/json\r\n{size}{extra}\r\n").encode()


def body() -> bytes:
    return json.dumps({"model": "chat", "messages": HELLO}).encode()


def assert_error(raw: bytes, status: int, code: str) -> dict[str, str]:
    got, headers, payload = answer(raw)
    assert got == status, raw[:300]
    assert headers["content-type"] == "application/json"
    assert payload["error"]["code"] == code
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    return headers


def select_readable(sock: socket.socket, timeout: float) -> tuple[list[socket.socket], list[Any], list[Any]]:
    return select.select([sock], [], [], timeout)


def test_headers_that_never_finish_are_408(gw: BackgroundGateway) -> None:
    with connect(gw.port) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-slow: ")
        started = time.monotonic()
        raw = read_all(sock)
    assert_error(raw, 408, "request_timeout")
    assert time.monotonic() - started < 5


def test_headers_dribbled_byte_by_byte_are_cut_off(gw: BackgroundGateway) -> None:
    # One byte every 50 ms never lets the head complete within its 0.5 s deadline.
    with connect(gw.port) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
        with contextlib.suppress(OSError):
            for byte in b"x-dribble: " + b"a" * 200:
                sock.sendall(bytes([byte]))
                ready, _, _ = select_readable(sock, 0.05)
                if ready:
                    break
        raw = read_all(sock)
    assert_error(raw, 408, "request_timeout")


def test_a_connection_that_says_nothing_is_closed(gw: BackgroundGateway) -> None:
    with connect(gw.port) as sock:
        assert read_all(sock) == b""  # closed, with nothing to answer


@pytest.mark.parametrize(
    "rest",
    [
        pytest.param("length", id="content-length larger than the body"),
        pytest.param("chunk", id="chunk size larger than its data"),
    ],
)
def test_a_body_that_never_arrives_is_408_in_the_endpoints_dialect(gw: BackgroundGateway, rest: str) -> None:
    with connect(gw.port) as sock:
        if rest == "length":
            sock.sendall(request_head(gw.port, length=len(body()) + 100) + body())
        else:
            sock.sendall(request_head(gw.port, "transfer-encoding: chunked\r\n") + b"400\r\n" + body())
        raw = read_all(sock)
    headers = assert_error(raw, 408, "request_timeout")
    # Answered by the endpoint itself, which adds its request id.
    assert headers["x-request-id"].startswith("req_")
    assert headers["connection"] == "close"


def test_a_body_dribbled_past_its_deadline_is_408(gw: BackgroundGateway) -> None:
    payload = body()
    with connect(gw.port) as sock:
        sock.sendall(request_head(gw.port, length=len(payload)))
        with contextlib.suppress(OSError):
            for byte in payload:
                sock.sendall(bytes([byte]))
                if select_readable(sock, 0.05)[0]:
                    break
        raw = read_all(sock)
    assert_error(raw, 408, "request_timeout")


def test_an_oversized_head_is_431(gw: BackgroundGateway) -> None:
    with connect(gw.port) as sock:
        sock.sendall(request_head(gw.port, "x-big: " + "a" * 100_000 + "\r\n", length=len(body())) + body())
        raw = read_all(sock)
    assert_error(raw, 431, "request_header_fields_too_large")


def test_what_is_not_http_is_400_json(gw: BackgroundGateway) -> None:
    with connect(gw.port) as sock:
        sock.sendall(b"HELLO THERE\r\n\r\n")
        raw = read_all(sock)
    assert_error(raw, 400, "invalid_http")


def test_requests_that_arrive_whole_are_untouched(gw: BackgroundGateway) -> None:
    # Keep-alive requests well past every deadline in all: only the time a request takes to arrive counts.
    with sdk(gw) as client:
        for _ in range(3):
            assert client.chat.completions.create(model="chat", messages=HELLO).choices
    with connect(gw.port) as sock:
        for _ in range(2):
            sock.sendall(request_head(gw.port, length=len(body())) + body())
            assert read_response(sock).startswith(b"HTTP/1.1 200")


def test_connections_beyond_the_cap_get_a_clear_503(
    sim: BackgroundSimulator, make_gateway: GatewayFactory
) -> None:
    gw = make_gateway({"sim": upstream(sim)}, {"chat": route(("sim", "sim-chat"))},
                      server={**LIMITS, "header_timeout_s": 30, "max_connections": 3})
    held = [connect(gw.port) for _ in range(3)]
    try:
        with connect(gw.port) as sock:
            sock.sendall(request_head(gw.port, length=len(body())) + body())
            raw = read_all(sock)
        headers = assert_error(raw, 503, "too_many_connections")
        assert headers["retry-after"] == "1"
    finally:
        for sock in held:
            sock.close()
    # Once they are gone, requests are served again.
    wait_for(lambda: _served(gw), timeout=10, what="a request to be served after the held connections closed")


def _served(gw: BackgroundGateway) -> bool:
    with connect(gw.port) as sock:
        sock.sendall(request_head(gw.port, length=len(body())) + body())
        return read_response(sock).startswith(b"HTTP/1.1 200")


# --- an endpoint that does not know about the deadline still has its connection answered ---------------------


async def _unaware_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass


@contextlib.contextmanager
def unaware_server(app: Any = None, header_timeout_s: float = 5) -> Iterator[int]:
    port = free_port()
    limits = ConnectionLimits(header_timeout_s=header_timeout_s, body_timeout_s=0.3, max_header_bytes=4096,
                              max_connections=10)
    config = uvicorn.Config(app or _unaware_app, host="127.0.0.1", port=port, lifespan="off", log_level="error",
                            http=protocol_factory(limits))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=10, what="the server to start")
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_an_endpoint_that_ignores_the_deadline_is_answered_for() -> None:
    with unaware_server() as port, connect(port) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc")
        raw = read_all(sock)
    assert_error(raw, 408, "request_timeout")


def test_an_answer_given_before_the_body_ends_the_connection_when_the_body_stalls(gw: BackgroundGateway) -> None:
    # No key: 401 at once, before the body is read; the client then sends a byte of it and goes silent.
    with connect(gw.port) as sock:
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body()) + 50}\r\n\r\n"
                ).encode()
        sock.sendall(head + body()[:1])
        raw = read_all(sock)  # returns once the gateway closes the connection
    assert raw.startswith(b"HTTP/1.1 401")


def test_blank_lines_after_a_request_do_not_hold_the_connection(gw: BackgroundGateway) -> None:
    with connect(gw.port) as sock:
        sock.sendall(request_head(gw.port, length=len(body())) + body())
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"\r\n")
        assert read_all(sock) == b""


async def _slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await asyncio.sleep(1.0)  # an answer that takes longer than the head deadline
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_an_upgrade_header_is_served_like_any_request() -> None:
    # An h2c upgrade attempt is answered in HTTP/1.1, however long the answer takes.
    with unaware_server(_slow_app, header_timeout_s=0.3) as port, connect(port) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200")


def test_a_pipelined_request_is_not_charged_for_the_one_before_it(gw: BackgroundGateway) -> None:
    # A's 3.5 KB body and the start of B arrive in one read: only B's own bytes count toward its 4 KB head.
    padded = json.dumps({"model": "chat", "messages": HELLO, "user": "x" * 3500}).encode()
    first = request_head(gw.port, length=len(padded)) + padded
    second = request_head(gw.port, "x-pad: " + "p" * 600 + "\r\n", length=len(body())) + body()
    with connect(gw.port) as sock:
        sock.sendall(first + second[:40])
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(second[40:500])  # B's head still unfinished: 3.7 KB + 460 B were once counted as its own
        sock.sendall(second[500:])
        assert read_response(sock).startswith(b"HTTP/1.1 200")
