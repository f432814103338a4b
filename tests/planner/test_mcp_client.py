"""planner.mcp against a real MCP server (the SDK's own) over real sockets and a real stdio child process."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from config.schema import McpServerConfig
from planner.mcp import McpServers, ToolCallFailed
from planner.tools import ToolSpec
from tests.planner.mcp_server import CRASH_ENV, RECORD_ENV, BackgroundMcpServer, Behaviour
from tests.support import free_port, unaccepting_port

REPO = Path(__file__).resolve().parents[2]
SECRET = "hunter2-secret"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[BackgroundMcpServer]:
    with BackgroundMcpServer() as started:
        yield started


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., McpServers]]:
    """Builds McpServers and closes every one of them after the test."""
    made: list[McpServers] = []

    def build(configs: dict[str, dict[str, Any]], **kwargs: Any) -> McpServers:
        servers = McpServers({name: McpServerConfig(**raw) for name, raw in configs.items()}, **kwargs)
        made.append(servers)
        return servers

    yield build
    for servers in made:
        await servers.close()


def by_name(specs: list[ToolSpec]) -> dict[str, ToolSpec]:
    return {spec.name: spec for spec in specs}


async def test_tools_names_flags_and_schemas(server: BackgroundMcpServer, make: Callable[..., McpServers]) -> None:
    servers = make({"t": {"url": server.url, "headers": {"Authorization": f"Bearer {SECRET}"}}})
    specs, notes = await servers.tools(["t"])
    assert notes == []
    tools = by_name(specs)
    assert set(tools) == {"t.lookup", "t.book", "t.broken", "t.forecast", "t.report"}
    lookup, book = tools["t.lookup"], tools["t.book"]
    assert (lookup.source, lookup.remote_name, lookup.retry_safe) == ("mcp:t", "lookup", True)
    assert (book.remote_name, book.retry_safe) == ("book", False)
    assert tools["t.broken"].retry_safe is False
    assert lookup.parameters["properties"]["city"]["type"] == "string"
    assert lookup.parameters["required"] == ["city"]
    assert book.parameters["required"] == ["city", "date"]
    assert lookup.description == "Current weather in a city."
    assert lookup.argument_errors({"city": "Oslo"}) == []
    assert lookup.argument_errors({"town": "Oslo"}) != []
    # The listing is cached: asking again does not reach the server.
    again, _ = await servers.tools(["t"])
    assert by_name(again).keys() == tools.keys()
    assert server.recorder.listings == 1


async def test_unreachable_servers_are_notes_within_the_connect_timeout(
    server: BackgroundMcpServer, make: Callable[..., McpServers],
) -> None:
    clock = FakeClock()
    with unaccepting_port() as stuck:
        servers = make({
            "t": {"url": server.url},
            "down": {"url": f"http://127.0.0.1:{free_port()}/mcp?key={SECRET}", "connect_timeout_s": 2.0},
            "stuck": {"url": f"http://127.0.0.1:{stuck}/mcp", "headers": {"X-Key": SECRET}, "connect_timeout_s": 0.5},
        }, clock=clock)
        started = time.monotonic()
        specs, notes = await servers.tools(["t", "down", "stuck", "nowhere"])
        assert time.monotonic() - started < 2.0
        assert {spec.name for spec in specs} == {"t.lookup", "t.book", "t.broken", "t.forecast", "t.report"}
        assert len(notes) == 3
        assert any("'down'" in note for note in notes)
        assert any("'stuck'" in note and "0.5s" in note for note in notes)
        assert any("'nowhere'" in note and "not configured" in note for note in notes)
        assert not any(SECRET in note or "127.0.0.1" in note for note in notes)
        # A server found down is not waited for again at once: the next run gets its note immediately.
        started = time.monotonic()
        _, again = await servers.tools(["stuck"])
        assert time.monotonic() - started < 0.2
        assert "not retried" in again[0]
        clock.now += 60
        _, later = await servers.tools(["down"])
        assert "not retried" not in later[0] and "connection failed" in later[0]


async def test_call_returns_the_text_and_sends_the_idempotency_key(
    server: BackgroundMcpServer, make: Callable[..., McpServers],
) -> None:
    servers = make({"t": {"url": server.url}})
    specs, _ = await servers.tools(["t"])
    text = await servers.call(by_name(specs)["t.lookup"], {"city": "Oslo"}, "run-1:t1")
    assert text == "weather in Oslo: 18C, light rain"
    [call] = server.recorder.of("lookup")
    assert call.arguments == {"city": "Oslo"}
    assert call.idempotency_key == "run-1:t1"


async def test_structured_content_without_text_and_long_text(
    server: BackgroundMcpServer, make: Callable[..., McpServers],
) -> None:
    servers = make({"t": {"url": server.url}})
    tools = by_name((await servers.tools(["t"]))[0])
    assert await servers.call(tools["t.forecast"], {"days": 2}, "run-12:t1") == '{"days":2,"temps":[18,19]}'
    text = await servers.call(tools["t.report"], {"chars": 20_000}, "run-12:t2")
    assert text.startswith("r" * 16_000 + "\n[")
    assert "4000" in text[16_000:]


async def test_a_read_only_tool_is_retried_with_the_same_key(make: Callable[..., McpServers]) -> None:
    with BackgroundMcpServer(Behaviour(lookup_fail_first=1, lookup_fail_hang_s=0.6)) as server:
        servers = make({"t": {"url": server.url, "timeout_s": 0.3, "retries": 1}})
        specs, _ = await servers.tools(["t"])
        text = await servers.call(by_name(specs)["t.lookup"], {"city": "Rome"}, "run-2:t1")
        assert text == "weather in Rome: 18C, light rain"
        calls = server.recorder.of("lookup")
        assert len(calls) == 2
        assert {call.idempotency_key for call in calls} == {"run-2:t1"}


async def test_a_read_only_tool_fails_for_good_after_its_retries(make: Callable[..., McpServers]) -> None:
    with BackgroundMcpServer(Behaviour(lookup_fail_first=5, lookup_fail_hang_s=0.6)) as server:
        servers = make({"t": {"url": server.url, "timeout_s": 0.3, "retries": 1}})
        specs, _ = await servers.tools(["t"])
        with pytest.raises(ToolCallFailed, match="timed out") as failed:
            await servers.call(by_name(specs)["t.lookup"], {"city": "Rome"}, "run-3:t1")
        assert failed.value.attempts == 2
        assert len(server.recorder.of("lookup")) == 2


async def test_a_tool_that_is_not_retry_safe_is_attempted_once(make: Callable[..., McpServers]) -> None:
    with BackgroundMcpServer(Behaviour(book_delay_s=0.6)) as server:
        servers = make({"t": {"url": server.url, "timeout_s": 0.3, "retries": 3}})
        specs, _ = await servers.tools(["t"])
        with pytest.raises(ToolCallFailed, match="timed out") as failed:
            await servers.call(by_name(specs)["t.book"], {"city": "Oslo", "date": "2025-06-01"}, "run-4:t2")
        assert failed.value.attempts == 1
        [call] = server.recorder.of("book")
        assert call.idempotency_key == "run-4:t2"


async def test_an_error_result_fails_without_a_retry(
    server: BackgroundMcpServer, make: Callable[..., McpServers],
) -> None:
    servers = make({"t": {"url": server.url, "retries": 3}})
    specs, _ = await servers.tools(["t"])
    # Even a tool that may be retried: an isError result is the tool's answer, not a lost call.
    broken = dataclasses.replace(by_name(specs)["t.broken"], retry_safe=True)
    with pytest.raises(ToolCallFailed, match="broken cannot handle 7") as failed:
        await servers.call(broken, {"x": 7}, "run-5:t1")
    assert failed.value.attempts == 1
    assert len(server.recorder.of("broken")) == 1


async def test_calls_in_flight_per_server_are_bounded(make: Callable[..., McpServers]) -> None:
    with BackgroundMcpServer(Behaviour(lookup_delay_s=0.2)) as server:
        servers = make({"t": {"url": server.url, "concurrency": 2}})
        specs, _ = await servers.tools(["t"])
        lookup = by_name(specs)["t.lookup"]
        cities = ["Oslo", "Rome", "Lima", "Kyiv", "Pune", "Baku"]
        texts = await asyncio.gather(*(servers.call(lookup, {"city": c}, f"run-6:{c}") for c in cities))
        assert texts == [f"weather in {c}: 18C, light rain" for c in cities]
        assert server.recorder.max_in_flight == 2


async def test_a_restarted_http_server_is_called_again(make: Callable[..., McpServers]) -> None:
    first = BackgroundMcpServer().start()
    port = first.port
    try:
        servers = make({"t": {"url": first.url, "retries": 1}})
        specs, _ = await servers.tools(["t"])
        lookup = by_name(specs)["t.lookup"]
        assert await servers.call(lookup, {"city": "Oslo"}, "run-7:t1")
    finally:
        first.stop()
    with BackgroundMcpServer(port=port) as second:
        assert await servers.call(lookup, {"city": "Rome"}, "run-7:t2") == "weather in Rome: 18C, light rain"
        assert [call.idempotency_key for call in second.recorder.of("lookup")] == ["run-7:t2"]


def stdio_config(tmp_path: Path, **env: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "tests.planner.mcp_server", "--stdio"]
    return {"command": command, "env": {"PYTHONPATH": str(REPO), **env}, "connect_timeout_s": 20.0}


def recorded(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_stdio_server_lists_and_calls(tmp_path: Path, make: Callable[..., McpServers]) -> None:
    record = tmp_path / "calls.jsonl"
    servers = make({"s": stdio_config(tmp_path, **{RECORD_ENV: str(record)})})
    specs, notes = await servers.tools(["s"])
    assert notes == []
    lookup = by_name(specs)["s.lookup"]
    assert lookup.retry_safe
    assert await servers.call(lookup, {"city": "Lima"}, "run-8:t1") == "weather in Lima: 18C, light rain"
    assert recorded(record) == [
        {"tool": "tools/list"}, {"tool": "lookup", "arguments": {"city": "Lima"}, "key": "run-8:t1"},
    ]


async def test_a_lost_connection_is_reconnected_and_retried_only_for_a_retry_safe_tool(
    tmp_path: Path, make: Callable[..., McpServers],
) -> None:
    record, crash = tmp_path / "calls.jsonl", tmp_path / "crash"
    servers = make({"s": {**stdio_config(tmp_path, **{RECORD_ENV: str(record), CRASH_ENV: str(crash)}),
                          "retries": 1}})
    specs, _ = await servers.tools(["s"])
    lookup = by_name(specs)["s.lookup"]
    crash.touch()
    # The server process dies in the middle of the first attempt; the retry runs on a new one.
    assert await servers.call(lookup, {"city": "Baku"}, "run-10:t1") == "weather in Baku: 18C, light rain"
    specs, notes = await servers.tools(["s"])
    assert notes == [] and len(specs) == 5
    # Each connection listed the tools once, before its first call; the second tools() used that listing.
    assert [(line["tool"], line.get("key")) for line in recorded(record)] == [
        ("tools/list", None), ("lookup", "run-10:t1"), ("tools/list", None), ("lookup", "run-10:t1"),
    ]
    crash.touch()
    once = dataclasses.replace(lookup, retry_safe=False)
    with pytest.raises(ToolCallFailed, match="-32000") as failed:
        await servers.call(once, {"city": "Pune"}, "run-10:t2")
    assert failed.value.attempts == 1
    assert [line.get("key") for line in recorded(record)].count("run-10:t2") == 1


async def test_close_is_prompt_and_leaves_no_task(tmp_path: Path, server: BackgroundMcpServer) -> None:
    servers = McpServers({"t": McpServerConfig(url=server.url), "s": McpServerConfig(**stdio_config(tmp_path))})
    specs, notes = await servers.tools(["t", "s"])
    assert notes == [] and len(specs) == 10
    await servers.call(by_name(specs)["t.lookup"], {"city": "Oslo"}, "run-9:t1")
    started = time.monotonic()
    await servers.close()
    assert time.monotonic() - started < 3.0
    assert [task for task in asyncio.all_tasks() if task is not asyncio.current_task()] == []
    with pytest.raises(ToolCallFailed, match="shutting down"):
        await servers.call(by_name(specs)["t.lookup"], {"city": "Oslo"}, "run-9:t2")
