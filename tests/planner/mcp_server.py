"""A real MCP server for the tests of planner.mcp: the SDK's own MCPServer, over HTTP or stdio.

`BackgroundMcpServer` serves the tools over streamable HTTP on 127.0.0.1 from a background thread;
`python -m tests.planner.mcp_server --stdio` serves the same tools over stdio. There a file named by
MCP_TEST_RECORD, when set, gets one JSON line per call and per tools/list; and while a file named by
MCP_TEST_CRASH exists, a lookup deletes it and kills the process mid-call (a connection lost).

Tools:
- lookup(city): read-only. Its first `lookup_fail_first` calls hang for `lookup_fail_hang_s` (longer
  than the client's timeout, so they fail as timeouts); every call takes `lookup_delay_s`.
- book(city, date): neither read-only nor idempotent; takes `book_delay_s`.
- broken(x): always fails inside the tool, which the SDK answers as a result with isError=True.
- forecast(days): answers with structured content only, no text.
- report(chars): answers with a text of `chars` characters.
Every call is recorded with its arguments and the idempotency key from the request's _meta.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ToolAnnotations
from mcp.types import Tool as McpTool

# planner.mcp.IDEMPOTENCY_META_KEY, spelled out: importing planner.mcp (and the gateway's config) would slow
# down every start of the stdio server, and a mismatch fails the tests that check the key arrives.
IDEMPOTENCY_META_KEY = "cutover/idempotency-key"
RECORD_ENV = "MCP_TEST_RECORD"
CRASH_ENV = "MCP_TEST_CRASH"


@dataclass(frozen=True)
class Call:
    tool: str
    arguments: dict[str, Any]
    idempotency_key: str | None


@dataclass
class Behaviour:
    """Knobs a test may change between calls (read by the tools at call time)."""

    lookup_delay_s: float = 0.0
    lookup_fail_first: int = 0
    lookup_fail_hang_s: float = 2.0
    book_delay_s: float = 0.0
    # Only for a server in a process of its own (stdio): see the module doc.
    lookup_crash_flag: str | None = None


@dataclass
class Recorder:
    """Calls seen by the server, and the most lookups it ever had in flight at once; thread-safe."""

    record_file: str | None = None
    calls: list[Call] = field(default_factory=list)
    listings: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, tool: str, arguments: dict[str, Any], ctx: Context) -> int:
        """Record a call; returns how many calls of this tool came before it."""
        meta = ctx.request_context.meta or {}
        key = meta.get(IDEMPOTENCY_META_KEY)
        call = Call(tool, arguments, key if isinstance(key, str) else None)
        with self._lock:
            before = sum(1 for c in self.calls if c.tool == tool)
            self.calls.append(call)
        self.write({"tool": tool, "arguments": arguments, "key": call.idempotency_key})
        return before

    def listed(self) -> None:
        with self._lock:
            self.listings += 1
        self.write({"tool": "tools/list"})

    def write(self, line: dict[str, Any]) -> None:
        if self.record_file:
            with open(self.record_file, "a", encoding="utf-8") as out:
                out.write(json.dumps(line) + "\n")

    def of(self, tool: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.tool == tool]

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1


class _CountingServer(MCPServer):
    """Counts tools/list requests, so a test can tell a cached listing from a fetched one."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__("cutover-test-tools", log_level="WARNING")
        self._recorder = recorder

    async def list_tools(self) -> list[McpTool]:
        self._recorder.listed()
        return await super().list_tools()


def build_server(behaviour: Behaviour, recorder: Recorder) -> MCPServer:
    server = _CountingServer(recorder)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def lookup(city: str, ctx: Context) -> str:
        """Current weather in a city."""
        before = recorder.record("lookup", {"city": city}, ctx)
        if behaviour.lookup_crash_flag is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(behaviour.lookup_crash_flag)
                os._exit(3)
        with recorder.counting():
            if before < behaviour.lookup_fail_first:
                await asyncio.sleep(behaviour.lookup_fail_hang_s)
            await asyncio.sleep(behaviour.lookup_delay_s)
        return f"weather in {city}: 18C, light rain"

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, idempotent_hint=False, destructive_hint=False))
    async def book(city: str, date: str, ctx: Context) -> str:
        """Book a hotel room in a city for one night."""
        count = recorder.record("book", {"city": city, "date": date}, ctx)
        await asyncio.sleep(behaviour.book_delay_s)
        return f"booked a room in {city} for {date}, confirmation B-{count + 1:04d}"

    @server.tool()
    async def broken(x: int, ctx: Context) -> str:
        """Always fails."""
        recorder.record("broken", {"x": x}, ctx)
        # ToolError's message reaches the client; any other exception is reported without its text.
        raise ToolError(f"broken cannot handle {x}")

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def forecast(days: int, ctx: Context) -> CallToolResult:
        """Daily temperatures, as data."""
        recorder.record("forecast", {"days": days}, ctx)
        return CallToolResult(content=[], structured_content={"days": days, "temps": [18, 19, 17][:days]})

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def report(chars: int, ctx: Context) -> str:
        """A long report."""
        recorder.record("report", {"chars": chars}, ctx)
        return "r" * chars

    return server


class BackgroundMcpServer:
    """`with BackgroundMcpServer() as server: McpServers({"t": McpServerConfig(url=server.url)})`."""

    def __init__(self, behaviour: Behaviour | None = None, *, port: int = 0) -> None:
        self.behaviour = behaviour or Behaviour()
        self._port = port
        self.recorder = Recorder()
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the server has not been started")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> BackgroundMcpServer:
        # Bound and listening before the thread starts: a client may connect at once, the kernel queues it.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        sock.listen(64)
        self._socket = sock
        app = build_server(self.behaviour, self.recorder).streamable_http_app()
        config = uvicorn.Config(
            app, lifespan="on", log_level="warning", access_log=False, loop="asyncio", timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        server = self._server
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), name="mcp-test-server", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()

    def __enter__(self) -> BackgroundMcpServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stdio", action="store_true", help="serve on stdin/stdout")
    args = parser.parse_args()
    if not args.stdio:
        parser.error("only --stdio is supported from the command line")
    behaviour = Behaviour(lookup_crash_flag=os.environ.get(CRASH_ENV))
    server = build_server(behaviour, Recorder(record_file=os.environ.get(RECORD_ENV)))
    server.run("stdio")


if __name__ == "__main__":
    main()
