"""MCP servers' tools in plan-and-execute runs, through a real gateway and a real MCP server (the mcp
SDK's own, on a loopback port): results fed to later tasks, retries only for read-only tools,
timeouts, the idempotency key at the server, a cap on tool calls, and MCP and client tools in one run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.gateway.helpers import metric, scrape
from tests.planner.conftest import CHEAP_M, JOINER_ANSWER, META, Rig, RigFactory, meta_config, plan_text, task
from tests.planner.mcp_server import BackgroundMcpServer, Behaviour
from tests.planner.test_meta_client_tools import QUESTION

NOTIFY_TOOL = {
    "type": "function",
    "function": {"name": "notify", "description": "Tell the user something.",
                 "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
}


@pytest.fixture
def mcp() -> Iterator[BackgroundMcpServer]:
    with BackgroundMcpServer(Behaviour()) as server:
        yield server


def rig_with(make_rig: RigFactory, mcp: BackgroundMcpServer, plan: str, *, timeout_s: float = 5.0,
             **meta: Any) -> Rig:
    return make_rig(plan=plan, meta=meta_config(mcp_servers=["weather"], **meta),
                    extra={"mcp_servers": {"weather": {"url": mcp.url, "timeout_s": timeout_s, "retries": 1}}})


def lookup(task_id: str, city: str, *deps: str) -> dict[str, Any]:
    return {"id": task_id, "tool": "weather.lookup", "arguments": {"city": city}, "deps": list(deps)}


def ask(rig: Rig, **kwargs: Any) -> Any:
    return rig.client.chat.completions.create(model=META, messages=[{"role": "user", "content": QUESTION}],
                                              extra_body={"cutover": {"trace": True}}, **kwargs)


def tasks_of(answer: Any) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in answer.model_extra["cutover"]["trace"]["tasks"]}


def test_server_tools_run_in_the_gateway_and_feed_later_tasks(make_rig: RigFactory, mcp: BackgroundMcpServer) -> None:
    plan = plan_text([lookup("l1", "Paris"), lookup("l2", "Berlin"),
                      task("cmp", ["l1", "l2"], instruction="Compare the two cities' weather.")])
    rig = rig_with(make_rig, mcp, plan)
    answer = ask(rig)
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.content == JOINER_ANSWER
    cities = sorted(c.arguments["city"] for c in mcp.recorder.of("lookup"))
    assert cities == ["Berlin", "Paris"]
    compare = [r for r in rig.requests(CHEAP_M) if "Compare the two cities" in json.dumps(r.body)]
    assert len(compare) == 1
    assert "weather in Paris: 18C" in json.dumps(compare[0].body) and "weather in Berlin" in json.dumps(compare[0].body)
    assert tasks_of(answer)["l1"]["model"] == "mcp:weather"
    # The planner was shown the server's tools with their schemas.
    planner_prompt = json.dumps(rig.requests("planner-m")[0].body["messages"])
    assert "weather.lookup" in planner_prompt and "weather.book" in planner_prompt


def test_a_read_only_tool_is_retried_with_the_same_key(make_rig: RigFactory, mcp: BackgroundMcpServer) -> None:
    mcp.behaviour.lookup_fail_first = 1  # the first call hangs past the timeout
    mcp.behaviour.lookup_fail_hang_s = 3.0
    rig = rig_with(make_rig, mcp, plan_text([lookup("l1", "Paris")]), timeout_s=0.5)
    answer = ask(rig)
    calls = mcp.recorder.of("lookup")
    assert len(calls) == 2 and calls[0].idempotency_key == calls[1].idempotency_key
    assert re.fullmatch(r"[0-9a-f]{24}\.l1", calls[0].idempotency_key or "")
    assert tasks_of(answer)["l1"]["status"] == "ok"


def test_a_side_effecting_tool_that_times_out_is_not_called_again(
    make_rig: RigFactory, mcp: BackgroundMcpServer,
) -> None:
    mcp.behaviour.book_delay_s = 3.0
    book = {"id": "b1", "tool": "weather.book", "arguments": {"city": "Paris", "date": "2026-12-24"}, "deps": []}
    plan = plan_text([book, task("tell", ["b1"], instruction="Confirm the booking.")])
    rig = rig_with(make_rig, mcp, plan, timeout_s=0.5)
    answer = ask(rig)
    assert len(mcp.recorder.of("book")) == 1
    tasks = tasks_of(answer)
    assert tasks["b1"]["status"] == "failed" and tasks["tell"]["status"] == "skipped"
    assert answer.choices[0].finish_reason == "stop"  # the joiner answered from what there was


def test_mcp_and_client_tools_mix_in_one_run(make_rig: RigFactory, mcp: BackgroundMcpServer) -> None:
    book = {"id": "b1", "tool": "weather.book", "arguments": {"city": "Paris", "date": "2026-12-24"}, "deps": []}
    notify = {"id": "n1", "tool": "notify", "arguments": {"text": "Done: ${b1}"}, "deps": ["b1"]}
    plan = plan_text([lookup("l1", "Paris"), book, notify, task("end", ["l1", "n1"], instruction="Sum it up.")])
    rig = rig_with(make_rig, mcp, plan)
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    first = rig.client.chat.completions.create(model=META, messages=messages, tools=[NOTIFY_TOOL])  # type: ignore[list-item]
    calls = first.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["notify"]  # type: ignore[union-attr]
    text = json.loads(calls[0].function.arguments)["text"]  # type: ignore[union-attr]
    assert text.startswith("Done: booked a room in Paris for 2026-12-24")
    messages.append(first.choices[0].message)
    messages.append({"role": "tool", "tool_call_id": calls[0].id, "content": "user notified"})
    second = rig.client.chat.completions.create(model=META, messages=messages, tools=[NOTIFY_TOOL])  # type: ignore[list-item]
    assert second.choices[0].message.content == JOINER_ANSWER
    # Nothing of round 0 ran again in round 1: one booking, one lookup, each with its own key.
    run_id = second.model_extra["cutover"]["run_id"]  # type: ignore[index]
    assert [c.idempotency_key for c in mcp.recorder.of("book")] == [f"{run_id}.b1"]
    assert [c.idempotency_key for c in mcp.recorder.of("lookup")] == [f"{run_id}.l1"]
    text = scrape(rig.gw.root_url)
    assert metric(text, "cutover_pe_tool_calls_total", meta_model=META, source="mcp", outcome="ok") == 2
    assert metric(text, "cutover_pe_tool_calls_total", meta_model=META, source="client", outcome="handed_back") == 1


def test_max_tool_calls_stops_server_tool_calls(make_rig: RigFactory, mcp: BackgroundMcpServer) -> None:
    plan = plan_text([lookup(f"l{i}", f"City {i}") for i in range(100)])
    rig = rig_with(make_rig, mcp, plan, caps={"max_tool_calls": 16, "max_tasks": 128},
                   shape={"max_tasks_per_round": 128}, concurrency=4)
    answer = ask(rig)
    assert answer.choices[0].finish_reason == "length"
    assert answer.model_extra["cutover"]["stop_reason"] == "max_tool_calls"
    assert len(mcp.recorder.of("lookup")) == 16
