"""`tool_rounds`: the simulated model as a ReAct loop, one tool call per answer until the turn holds that many
tool results, driven through a real socket by the official openai SDK's plain tool loop."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pydantic
import pytest

from simulator import SimulationSettings, SimulatorServer

SimFactory = Callable[..., Awaitable[SimulatorServer]]

CITIES = ["Paris", "Berlin", "Madrid", "Rome"]
LOOKUP: Any = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Facts about a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": CITIES}, "topic": {"type": "string"},
                           "year": {"type": "integer", "minimum": 2000}},
            "required": ["city", "topic", "year"],
            "additionalProperties": False,
        },
    },
}
QUESTION: Any = [{"role": "user", "content": "Which of the four cities is the largest?"}]


def _client(server: SimulatorServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)


async def _loop(client: openai.AsyncOpenAI, messages: list[Any], *, stream: bool = False,
                limit: int = 10) -> tuple[list[Any], list[dict[str, Any]]]:
    """The SDK's plain tool loop; returns every completion and the arguments of every call, in order."""
    completions: list[Any] = []
    calls: list[dict[str, Any]] = []
    for _ in range(limit):
        completion: Any
        if stream:
            async with client.chat.completions.stream(model="m", messages=messages, tools=[LOOKUP]) as events:
                completion = await events.get_final_completion()
        else:
            completion = await client.chat.completions.create(model="m", messages=messages, tools=[LOOKUP])
        completions.append(completion)
        choice = completion.choices[0]
        if choice.finish_reason != "tool_calls":
            return completions, calls
        tool_calls = choice.message.tool_calls or []
        assert len(tool_calls) == 1  # one call per answer
        messages.append(choice.message.model_dump(exclude_none=True))
        arguments = json.loads(tool_calls[0].function.arguments)
        calls.append(arguments)
        messages.append({"role": "tool", "tool_call_id": tool_calls[0].id, "content": f"{arguments['city']}: big"})
    raise AssertionError("the tool loop did not end")


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_the_model_calls_once_per_answer_until_the_turn_holds_its_rounds(
    make_sim: SimFactory, stream: bool
) -> None:
    sim = await make_sim(tool_rounds=4)
    async with _client(sim) as client:
        completions, calls = await _loop(client, list(QUESTION), stream=stream)
    assert [c.choices[0].finish_reason for c in completions] == ["tool_calls"] * 4 + ["stop"]
    final = completions[-1].choices[0].message
    assert final.content and final.content.startswith("[simulated]") and not final.tool_calls
    # Arguments fit the schema and differ by round: the enum cycles, a free string gets the round's number.
    assert [c["city"] for c in calls] == CITIES
    assert [c["topic"] for c in calls] == ["simulated", "simulated 2", "simulated 3", "simulated 4"]
    assert [c["year"] for c in calls] == [2000] * 4
    assert len({c.choices[0].message.tool_calls[0].id for c in completions[:-1]}) == 4
    # Each round trip is one recorded request, the conversation one tool result longer each time.
    chats = [r for r in sim.requests if r.path.endswith("/chat/completions")]
    assert [sum(m.get("role") == "tool" for m in r.body["messages"]) for r in chats] == [0, 1, 2, 3, 4]


@pytest.mark.asyncio
async def test_the_default_calls_once_then_answers(make_sim: SimFactory) -> None:
    sim = await make_sim()
    assert SimulationSettings().tool_rounds == 1
    async with _client(sim) as client:
        completions, calls = await _loop(client, list(QUESTION))
    assert [c.choices[0].finish_reason for c in completions] == ["tool_calls", "stop"]
    assert calls == [{"city": "Paris", "topic": "simulated", "year": 2000}]


@pytest.mark.asyncio
async def test_the_count_restarts_with_a_new_user_turn(make_sim: SimFactory) -> None:
    sim = await make_sim(tool_rounds=2)
    async with _client(sim) as client:
        messages: list[Any] = list(QUESTION)
        first, first_calls = await _loop(client, messages)
        messages.append(first[-1].choices[0].message.model_dump(exclude_none=True))
        messages.append({"role": "user", "content": "And which is the smallest?"})
        second, second_calls = await _loop(client, messages)
    assert len(first) == len(second) == 3
    assert [c["city"] for c in first_calls] == [c["city"] for c in second_calls] == ["Paris", "Berlin"]


@pytest.mark.asyncio
async def test_a_fixed_reply_still_wins_and_tool_choice_none_still_declines(make_sim: SimFactory) -> None:
    fixed = await make_sim(tool_rounds=3, replies={"m": "fixed answer"})
    plain = await make_sim(tool_rounds=3)
    async with _client(fixed) as client:
        answer = await client.chat.completions.create(model="m", messages=QUESTION, tools=[LOOKUP])
    async with _client(plain) as client:
        declined = await client.chat.completions.create(model="m", messages=QUESTION, tools=[LOOKUP],
                                                        tool_choice="none")
    assert answer.choices[0].message.content == "fixed answer" and not answer.choices[0].message.tool_calls
    assert declined.choices[0].finish_reason == "stop" and not declined.choices[0].message.tool_calls


@pytest.mark.asyncio
async def test_tool_rounds_can_be_changed_at_runtime(make_sim: SimFactory) -> None:
    sim = await make_sim()
    sim.settings = SimulationSettings(tool_rounds=3)
    async with _client(sim) as client:
        completions, calls = await _loop(client, list(QUESTION))
    assert len(calls) == 3 and completions[-1].choices[0].finish_reason == "stop"


def test_tool_rounds_must_be_positive() -> None:
    with pytest.raises(pydantic.ValidationError):
        SimulationSettings(tool_rounds=0)
