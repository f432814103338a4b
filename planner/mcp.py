"""The gateway's client to MCP servers: list their tools for the planner, call them for a plan's tasks.

The mcp SDK runs each connection in anyio task groups, which must be left in the task that entered
them. So every connection is owned by one background task that enters `async with Client(...)`,
publishes the client, and waits for a stop signal (or for the SDK to tear the connection down)
before leaving; calls from any run's task use the published client. A server is connected on first
use, and again after its connection broke.

A failed call is retried only for a tool its server marks read-only or idempotent, and every attempt
carries the same idempotency key in the request's `_meta`, so a server can tell a retry from a new call.
Error messages name a server by its config name only: its URL and headers may carry credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import httpx2
import orjson
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    REQUEST_TIMEOUT,
    CallToolResult,
    RequestParamsMeta,
    TextContent,
)
from mcp.types import Tool as McpTool

from config.schema import McpServerConfig
from planner.tools import ToolSpec, make_spec

IDEMPOTENCY_META_KEY = "cutover/idempotency-key"

_log = logging.getLogger("cutover.planner")
_MAX_RESULT_CHARS = 16_000
_MAX_LIST_PAGES = 50
# After a failed connect, a server is not tried again for this long: every run asks for the tools,
# and each would otherwise wait out the connect timeout of a server that is down.
_UNREACHABLE_COOLDOWN_S = 10.0
_CLOSE_WAIT_S = 5.0
# Failures after which the same request may succeed; any other MCP error is the server's answer.
_TRANSIENT_CODES = frozenset({CONNECTION_CLOSED, REQUEST_TIMEOUT, INTERNAL_ERROR})


class ToolCallFailed(Exception):
    """A tool call that failed for good (after the retries it was allowed)."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class _Unreachable(Exception):
    """No connection to the server; the message is safe to show (it names no URL or header)."""


@dataclass(eq=False)
class _Link:
    """One connection, owned by one background task; `client` is published once it is connected."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    client: Client | None = None
    task: asyncio.Task[None] | None = None
    broken: bool = False
    # Listed once per connection, right after connecting.
    tools: list[McpTool] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.client is not None and not self.broken and self.task is not None and not self.task.done()

    @property
    def connected(self) -> Client:
        if self.client is None:
            raise _Unreachable("not connected")
        return self.client


class _Server:
    def __init__(self, name: str, config: McpServerConfig) -> None:
        self.name = name
        self.config = config
        # Shared by every run of this process: the server's limit, not a run's.
        self.calls = asyncio.Semaphore(config.concurrency)
        self.connecting = asyncio.Lock()
        self.link: _Link | None = None
        self.failed_at: float | None = None
        self.failure = ""

    def redact(self, text: str) -> str:
        """`text` without the server's URL or header values, which may carry credentials."""
        url = urlsplit(self.config.url or "")
        secrets = [self.config.url, url.password, url.query]
        secrets += [value.get_secret_value() for value in self.config.headers.values()]
        for secret in sorted(filter(None, secrets), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text[:300]


class McpServers:
    """The configured MCP servers of this process, connected on demand and shared by all runs."""

    def __init__(self, servers: Mapping[str, McpServerConfig], *, clock: Callable[[], float] = time.monotonic) -> None:
        self._servers = {name: _Server(name, config) for name, config in servers.items()}
        self._clock = clock
        self._owners: set[asyncio.Task[None]] = set()
        self._closed = False

    async def tools(self, names: Sequence[str]) -> tuple[list[ToolSpec], list[str]]:
        """ToolSpecs of the named servers' tools, and notes on servers (or tools) that were left out.

        A server that cannot be reached costs the plan its tools, never the request."""
        listings = await asyncio.gather(*(self._specs(name) for name in dict.fromkeys(names)))
        specs = [spec for found, _ in listings for spec in found]
        notes = [note for _, found in listings for note in found]
        return specs, notes

    async def call(self, spec: ToolSpec, arguments: dict[str, Any], idempotency_key: str) -> str:
        """Call the tool and return its result as text; `ToolCallFailed` when it fails for good."""
        server = self._servers.get(spec.source.removeprefix("mcp:")) if spec.source.startswith("mcp:") else None
        if server is None:
            raise ValueError(f"tool '{spec.name}' is not a tool of a configured MCP server")
        if self._closed:
            raise ToolCallFailed(f"tool '{spec.name}' was not called: the gateway is shutting down", attempts=0)
        allowed = 1 + (server.config.retries if spec.retry_safe else 0)
        # An open map on the wire; the SDK's TypedDict declares its extra keys in a way mypy does not read.
        meta = cast(RequestParamsMeta, {IDEMPOTENCY_META_KEY: idempotency_key})
        reason = ""
        for attempt in range(1, allowed + 1):
            try:
                async with server.calls:
                    result = await self._attempt(server, spec, arguments, meta)
            except _Unreachable as exc:
                reason = f"MCP server '{server.name}' could not be reached: {exc}"
            except TimeoutError:
                reason = f"tool '{spec.name}' timed out after {server.config.timeout_s:g}s"
            except MCPError as exc:
                reason = f"tool '{spec.name}' failed: MCP error {exc.code}: {server.redact(exc.message)}"
                if exc.code not in _TRANSIENT_CODES and not self._lost(exc):
                    raise ToolCallFailed(reason, attempts=attempt) from None
            except Exception as exc:
                # A result that breaks the protocol or the tool's own output schema: the tool did answer.
                reason = f"tool '{spec.name}' failed: {type(exc).__name__}: {server.redact(str(exc))}"
                raise ToolCallFailed(reason, attempts=attempt) from None
            else:
                if result.is_error:
                    answer = _text(result)[:1000]
                    raise ToolCallFailed(f"tool '{spec.name}' returned an error: {answer}", attempts=attempt)
                return _text(result)
            fields = {"tool": spec.name, "attempt": attempt, "error": reason}
            _log.info("MCP tool call failed", extra={"fields": fields})
        raise ToolCallFailed(reason, attempts=allowed)

    async def close(self) -> None:
        """Stop every connection and wait for its owner task (bounded; stragglers are cancelled)."""
        self._closed = True
        for server in self._servers.values():
            if server.link is not None:
                server.link.stop.set()
        owners = set(self._owners)
        if owners:
            _, pending = await asyncio.wait(owners, timeout=_CLOSE_WAIT_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=_CLOSE_WAIT_S)

    async def _attempt(
        self, server: _Server, spec: ToolSpec, arguments: dict[str, Any], meta: RequestParamsMeta,
    ) -> CallToolResult:
        link = await self._link(server)
        timeout = server.config.timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await link.connected.call_tool(
                    spec.remote_name, arguments, read_timeout_seconds=timeout, meta=meta,
                )
        except MCPError as exc:
            if self._lost(exc) and server.link is link:
                # Retired, so the next use reconnects (and lists the tools again).
                link.broken = True
                link.stop.set()
            raise

    @staticmethod
    def _lost(exc: MCPError) -> bool:
        """Whether the connection is gone: closed, or its HTTP session forgotten by the server."""
        return exc.code == CONNECTION_CLOSED or (exc.code == INVALID_REQUEST and "Session terminated" in exc.message)

    async def _specs(self, name: str) -> tuple[list[ToolSpec], list[str]]:
        server = self._servers.get(name)
        if server is None:
            return [], [f"MCP server '{name}' is not configured; its tools are left out"]
        try:
            tools = (await self._link(server)).tools
        except _Unreachable as exc:
            return [], [f"MCP server '{name}' could not be reached ({exc}); its tools are left out"]
        specs, notes = [], []
        for tool in tools:
            hints = tool.annotations
            try:
                specs.append(make_spec(
                    f"{name}.{tool.name}", tool.description or "", tool.input_schema, source=f"mcp:{name}",
                    retry_safe=bool(hints and (hints.read_only_hint or hints.idempotent_hint)), remote_name=tool.name,
                ))
            except ValueError as exc:
                notes.append(f"MCP server '{name}': {exc}; the tool is left out")
        return specs, notes

    async def _link(self, server: _Server) -> _Link:
        """The server's live connection, or a new one (connected within connect_timeout_s, then listed)."""
        async with server.connecting:
            if self._closed:
                raise _Unreachable("the gateway is shutting down")
            link = server.link
            if link is not None and link.usable:
                return link
            if link is not None:
                link.stop.set()
            since = None if server.failed_at is None else self._clock() - server.failed_at
            if since is not None and since < _UNREACHABLE_COOLDOWN_S:
                raise _Unreachable(f"{server.failure} ({since:.0f}s ago; not retried for {_UNREACHABLE_COOLDOWN_S:g}s)")
            link = server.link = _Link()
            ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
            task = link.task = asyncio.create_task(self._own(server, link, ready), name=f"mcp-server-{server.name}")
            self._owners.add(task)
            task.add_done_callback(self._owners.discard)
            connect_s, list_s = server.config.connect_timeout_s, server.config.timeout_s
            timed_out, failed = f"no connection within {connect_s:g}s", "connection failed"
            try:
                async with asyncio.timeout(connect_s):
                    client = await asyncio.shield(ready)
                timed_out, failed = f"no tool list within {list_s:g}s", "listing its tools failed"
                # The SDK wants a tool listed before it is called (it checks results against the listed output
                # schema, and lists by itself otherwise); the planner's catalogue is the same listing.
                link.tools = await self._list(client, list_s)
            except BaseException as exc:
                link.broken = True
                link.stop.set()
                if not ready.done():
                    task.cancel()
                if not isinstance(exc, Exception):
                    raise
                server.failure = timed_out if isinstance(exc, TimeoutError) else f"{failed}: {_describe(server, exc)}"
                server.failed_at = self._clock()
                raise _Unreachable(server.failure) from None
            server.failed_at = None
            return link

    @staticmethod
    async def _list(client: Client, timeout_s: float) -> list[McpTool]:
        tools: list[McpTool] = []
        cursor: str | None = None
        async with asyncio.timeout(timeout_s):
            for _ in range(_MAX_LIST_PAGES):
                page = await client.list_tools(cursor=cursor)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if cursor is None:
                    break
        return tools

    async def _own(self, server: _Server, link: _Link, ready: asyncio.Future[Client]) -> None:
        """Hold one connection open from this task until it is stopped or breaks."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                client = await stack.enter_async_context(await self._connect(server, stack))
                link.client = client
                if not ready.done():
                    ready.set_result(client)
                await link.stop.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            elif not link.stop.is_set():
                why = _describe(server, exc)
                _log.warning("MCP server connection lost", extra={"fields": {"server": server.name, "error": why}})
        finally:
            link.broken = True
            if not ready.done():
                ready.cancel()

    @staticmethod
    async def _connect(server: _Server, stack: contextlib.AsyncExitStack) -> Client:
        config = server.config
        if config.command is not None:
            command = config.command
            params = StdioServerParameters(command=command[0], args=command[1:], env=config.env or None)
            return Client(params, cache=None)
        if config.url is None:
            raise _Unreachable("neither url nor command is configured")
        # Client(url) cannot send headers; an HTTP client of our own can, and is closed with the connection.
        headers = {name: value.get_secret_value() for name, value in config.headers.items()}
        # The SDK's own defaults, but for connecting; a read may wait long on the server's event stream.
        timeout = httpx2.Timeout(30.0, connect=config.connect_timeout_s, read=300.0)
        http = await stack.enter_async_context(httpx2.AsyncClient(headers=headers, timeout=timeout))
        return Client(streamable_http_client(config.url, http_client=http), cache=None)


def _describe(server: _Server, exc: BaseException) -> str:
    """A short, credential-free account of a failure (an exception group by its first leaf)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return f"MCP error {exc.code}: {server.redact(exc.message)}"
    detail = server.redact(str(exc))
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _text(result: CallToolResult) -> str:
    """The result as the planner reads it: its text, else its structured content as compact JSON."""
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    if texts:
        text = "\n".join(texts)
    elif result.structured_content is not None:
        text = orjson.dumps(result.structured_content, default=str).decode()
    else:
        text = " ".join(f"[{block.type} content]" for block in result.content)
    if len(text) > _MAX_RESULT_CHARS:
        text = text[:_MAX_RESULT_CHARS] + f"\n[... cut: {len(text) - _MAX_RESULT_CHARS} more characters]"
    return text
