"""Recognising a request that answers a run's tool calls, and the run's state between requests."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from planner.rounds import RunState, call_id, find_resume, new_run_id, tool_call
from planner.scheduler import TaskResult

RUN = "0123456789abcdef01234567"
USER = {"role": "user", "content": "weather in two cities?"}


def assistant(*ids: str) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [tool_call(i, "get_weather", {"city": "x"})
                                                                  for i in ids]}


def test_a_request_answering_our_latest_calls_resumes_its_run() -> None:
    a, b = call_id(RUN, 0, 0), call_id(RUN, 0, 1)
    messages = [USER, assistant(a, b), {"role": "tool", "tool_call_id": a, "content": "sunny"},
                {"role": "tool", "tool_call_id": b, "content": [{"type": "text", "text": "rain"}]}]
    resume = find_resume(messages)
    assert resume is not None
    assert (resume.run_id, resume.round, resume.results) == (RUN, 0, {a: "sunny", b: "rain"})
    assert resume.goal_messages == [USER]


def test_a_later_round_keeps_the_goal_before_the_first_call() -> None:
    first, second = call_id(RUN, 0, 0), call_id(RUN, 1, 2)
    messages = [USER, assistant(first), {"role": "tool", "tool_call_id": first, "content": "a"},
                assistant(second), {"role": "tool", "tool_call_id": second, "content": "b"}]
    resume = find_resume(messages)
    assert resume is not None and resume.round == 1 and resume.results == {second: "b"}
    assert resume.goal_messages == [USER]


def test_anything_else_is_a_new_request() -> None:
    ours = call_id(RUN, 0, 0)
    assert find_resume([USER]) is None
    # A new user turn after the results: a new question with history.
    assert find_resume([USER, assistant(ours), {"role": "tool", "tool_call_id": ours, "content": "a"}, USER]) is None
    # Another model's calls.
    assert find_resume([USER, assistant("call_abc"), {"role": "tool", "tool_call_id": "call_abc", "content": "a"}]
                       ) is None
    # Our calls, not answered yet.
    assert find_resume([USER, assistant(ours)]) is None
    assert find_resume([USER, "garbage", {"role": "tool", "tool_call_id": ours}]) is None


def test_run_ids_follow_the_idempotency_key() -> None:
    assert new_run_id("pe", "team-a", "key-1") == new_run_id("pe", "team-a", "key-1")
    assert new_run_id("pe", "team-a", "key-1") != new_run_id("pe", "team-b", "key-1")
    assert new_run_id("pe", "team-a", None) != new_run_id("pe", "team-a", None)
    assert len(new_run_id("pe", None, None)) == 24


def test_state_survives_its_json() -> None:
    state = RunState(RUN, "pe", "team-a", {"tasks": [], "final_instruction": "x"},
                     results={"w1": TaskResult("w1", output="sunny", cost=Decimal("0.0012"))},
                     spent={"llm_calls": 2, "cost": "0.01"}, round=1, issued={call_id(RUN, 1, 0): "w2"},
                     replies={"0": {"body": {}, "cost": "0"}}, tools=[{"name": "get_weather"}])
    again = RunState.from_json(state.to_json())
    assert again == state
