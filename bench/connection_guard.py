"""What the per-connection limits (gateway/connection.py) cost a request that arrives whole.

    .venv/bin/python bench/connection_guard.py

Feeds a typical OpenAI SDK request (11 headers, a small JSON body) to uvicorn's httptools protocol and to
`GuardedProtocol`, in turns, on one event loop with an in-memory transport and a minimal ASGI app, and prints
the time per request of each (parse, ASGI cycle, response) and the difference. Best of several rounds, so a
busy machine's noise shows as spread between runs, not as a bias between the two.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.connection import ConnectionLimits, GuardedProtocol

REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept-Encoding: gzip, deflate\r\n"
    b"Connection: keep-alive\r\nAccept: application/json\r\nContent-Type: application/json\r\n"
    b"User-Agent: OpenAI/Python 1.40.0\r\nX-Stainless-Lang: python\r\nX-Stainless-Retry-Count: 0\r\n"
    b"Authorization: Bearer sk-test-client\r\nContent-Length: 69\r\n\r\n"
    b'{"model":"chat","messages":[{"role":"user","content":"hello there"}]}'
)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class MemoryTransport:
    def __init__(self) -> None:
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def per_request_us(make: Callable[[ServerState], HttpToolsProtocol], requests: int) -> float:
    protocol = make(ServerState())
    protocol.connection_made(MemoryTransport())  # type: ignore[arg-type]
    started = time.perf_counter()
    for _ in range(requests):
        protocol.data_received(REQUEST)
        # Two loop turns: the request's task runs, answers, and the next request may start.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    elapsed = time.perf_counter() - started
    protocol.connection_lost(None)
    return elapsed / requests * 1e6


async def main() -> None:
    only = sys.argv[1:]  # e.g. "GuardedProtocol 2000": one protocol, one round (for callgrind)
    config = Config(app, http="httptools", log_level="warning")
    config.load()
    limits = ConnectionLimits(header_timeout_s=10, body_timeout_s=60, max_header_bytes=32768, max_connections=1000)
    makers: dict[str, Callable[[ServerState], HttpToolsProtocol]] = {
        "uvicorn (httptools)": lambda state: HttpToolsProtocol(config, state, {}),
        "GuardedProtocol": lambda state: GuardedProtocol(config, state, {}, limits=limits),
    }
    if only:
        await per_request_us(makers[only[0]], int(only[1]))
        return
    best = dict.fromkeys(makers, float("inf"))
    for _ in range(7):
        for name, make in makers.items():
            best[name] = min(best[name], await per_request_us(make, 20_000))
    print(f"{'protocol':<22}{'us/request':>12}")
    for name, value in best.items():
        print(f"{name:<22}{value:>12.2f}")
    base, guarded = best.values()
    print(f"\nadded by the limits: {guarded - base:.2f} us a request ({(guarded / base - 1) * 100:.1f}%)")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
