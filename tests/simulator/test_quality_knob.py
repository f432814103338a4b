"""The simulator's quality knob (simulator.quality) and scripted judge (simulator.judge), through a real socket
with the official openai SDK: every knob at rate 1 and 0 in each dialect, streamed and not; reproducible
draws; and a judge whose verdicts follow the answers it is shown, fed the gateway's own judge prompt."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import openai
import pytest
from jsonschema import Draft202012Validator

from migration.judge import RUBRIC, combine, judge_messages, read_verdict
from simulator import SimulationSettings, SimulatorServer
from simulator.judge import JudgeScript
from simulator.quality import OFF_TOPIC_MARKER, OFF_TOPIC_REPLY, Quality
from simulator.wire import split_pieces

SimFactory = Callable[..., Awaitable[SimulatorServer]]

MESSAGES: Any = [{"role": "user", "content": "Say hello"}]
SCHEMA: Any = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["answer", "confidence"],
    "additionalProperties": False,
}
CHAT_FORMAT: Any = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}
RESPONSES_FORMAT: Any = {"format": {"type": "json_schema", "name": "answer", "schema": SCHEMA, "strict": True}}
PARAMETERS: Any = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
CHAT_TOOL: Any = {"type": "function", "function": {"name": "forecast", "description": "Weather.",
                                                     "parameters": PARAMETERS}}
RESPONSES_TOOL: Any = {"type": "function", "name": "forecast", "description": "Weather.", "parameters": PARAMETERS}
HEALTHY_TEXT = "[simulated] lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor " \
               "incididunt ut labore"

TEXT_DIALECTS = ["chat", "chat-stream", "responses", "responses-stream", "completions", "completions-stream"]
JSON_DIALECTS = ["chat", "chat-stream", "responses", "responses-stream"]


def _client(server: SimulatorServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)


async def _text(client: openai.AsyncOpenAI, dialect: str, prompt: str = "Say hello", *, json_format: bool = False,
                model: str = "m") -> str:
    """The answer's text in `dialect`; streamed, the deltas must add up to the text the end event repeats."""
    stream = dialect.endswith("-stream")
    if dialect.startswith("chat"):
        extra: Any = {"response_format": CHAT_FORMAT} if json_format else {}
        messages: Any = [{"role": "user", "content": prompt}]
        if not stream:
            completion = await client.chat.completions.create(model=model, messages=messages, **extra)
            return completion.choices[0].message.content or ""
        chunks = [c async for c in await client.chat.completions.create(model=model, messages=messages, stream=True,
                                                                       **extra)]
        assert chunks[-1].choices[0].finish_reason == "stop"
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    if dialect.startswith("responses"):
        extra = {"text": RESPONSES_FORMAT} if json_format else {}
        if not stream:
            response = await client.responses.create(model=model, input=prompt, **extra)
            return response.output_text
        events = [e async for e in await client.responses.create(model=model, input=prompt, stream=True, **extra)]
        deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        completed = [e for e in events if e.type == "response.completed"]
        assert len(completed) == 1 and completed[0].response.output_text == deltas
        return deltas
    assert not json_format
    if not stream:
        legacy = await client.completions.create(model=model, prompt=prompt)
        return legacy.choices[0].text
    chunks_ = [c async for c in await client.completions.create(model=model, prompt=prompt, stream=True)]
    return "".join(c.choices[0].text for c in chunks_ if c.choices)


async def _arguments(client: openai.AsyncOpenAI, dialect: str, prompt: str = "Weather in Paris?") -> str:
    """The arguments of the one tool call the answer makes; streamed, every place that carries them must agree."""
    stream = dialect.endswith("-stream")
    if dialect.startswith("chat"):
        messages: Any = [{"role": "user", "content": prompt}]
        if not stream:
            completion = await client.chat.completions.create(model="m", messages=messages, tools=[CHAT_TOOL])
            choice = completion.choices[0]
            assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
            call: Any = choice.message.tool_calls[0]
            assert call.function.name == "forecast"
            return str(call.function.arguments)
        chunks = [c async for c in await client.chat.completions.create(model="m", messages=messages,
                                                                       tools=[CHAT_TOOL], stream=True)]
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        return "".join(tc.function.arguments or "" for c in chunks if c.choices
                       for tc in c.choices[0].delta.tool_calls or () if tc.function)
    if not stream:
        response = await client.responses.create(model="m", input=prompt, tools=[RESPONSES_TOOL])
        items: Any = [item for item in response.output if item.type == "function_call"]
        assert len(items) == 1 and items[0].name == "forecast"
        return str(items[0].arguments)
    events = [e async for e in await client.responses.create(model="m", input=prompt, tools=[RESPONSES_TOOL],
                                                             stream=True)]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = [e.arguments for e in events if e.type == "response.function_call_arguments.done"]
    item_done = [e.item.arguments for e in events if e.type == "response.output_item.done"]  # type: ignore[union-attr]
    completed = [e for e in events if e.type == "response.completed"]
    final: Any = [i for i in completed[0].response.output if i.type == "function_call"]
    assert done == item_done == [deltas] == [final[0].arguments]
    return deltas


def _tool_arguments_invalid(arguments: str) -> bool:
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return True
    return next(Draft202012Validator(PARAMETERS).iter_errors(value), None) is not None


def _is_valid_answer_json(text: str) -> bool:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return False
    return next(Draft202012Validator(SCHEMA).iter_errors(value), None) is None


def test_default_quality_is_healthy_and_settings_round_trip() -> None:
    settings = SimulationSettings()
    assert settings.quality == Quality() and settings.quality.healthy
    assert settings.qualities == {} and settings.judge is None
    dumped = SimulationSettings(quality=Quality(short=0.5, seed=3), qualities={"cand": Quality(off_topic=1.0)},
                                judge=JudgeScript(position_bias="B", noise=0.1)).model_dump(mode="json")
    assert dumped["quality"] == {"short": 0.5, "off_topic": 0.0, "invalid_json": 0.0, "bad_tool_arguments": 0.0,
                                 "seed": 3}
    assert dumped["judge"] == {"position_bias": "B", "noise": 0.1, "seed": 0}
    assert SimulationSettings.model_validate(dumped).qualities["cand"].off_topic == 1.0
    with pytest.raises(ValueError):
        Quality(short=1.5)
    with pytest.raises(ValueError):
        Quality.model_validate({"shrt": 0.5})


@pytest.mark.parametrize("dialect", TEXT_DIALECTS)
async def test_healthy_answers_are_unchanged(make_sim: SimFactory, dialect: str) -> None:
    sim = await make_sim(quality={"short": 0.0, "off_topic": 0.0, "invalid_json": 0.0, "bad_tool_arguments": 0.0})
    async with _client(sim) as client:
        assert await _text(client, dialect) == HEALTHY_TEXT


@pytest.mark.parametrize("dialect", TEXT_DIALECTS)
async def test_short_at_rate_one_cuts_the_answer_to_a_few_words(make_sim: SimFactory, dialect: str) -> None:
    sim = await make_sim(quality={"short": 1.0})
    async with _client(sim) as client:
        text = await _text(client, dialect)
    assert text == "[simulated] lorem ipsum"
    assert len(text.split()) * 2 < len(HEALTHY_TEXT.split())


@pytest.mark.parametrize("dialect", TEXT_DIALECTS)
async def test_off_topic_at_rate_one_replaces_the_answer(make_sim: SimFactory, dialect: str) -> None:
    sim = await make_sim(quality={"off_topic": 1.0})
    async with _client(sim) as client:
        text = await _text(client, dialect)
    assert text == OFF_TOPIC_REPLY and text.startswith(OFF_TOPIC_MARKER)


@pytest.mark.parametrize("dialect", JSON_DIALECTS)
@pytest.mark.parametrize("rate", [1.0, 0.0])
async def test_invalid_json_when_json_is_asked(make_sim: SimFactory, dialect: str, rate: float) -> None:
    sim = await make_sim(quality={"invalid_json": rate})
    async with _client(sim) as client:
        text = await _text(client, dialect, json_format=True)
        plain = await _text(client, dialect)
    assert _is_valid_answer_json(text) is (rate == 0.0)
    if rate:
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
    assert plain == HEALTHY_TEXT  # no JSON asked, nothing to break


@pytest.mark.parametrize("dialect", ["chat", "chat-stream", "responses", "responses-stream"])
@pytest.mark.parametrize("rate", [1.0, 0.0])
async def test_bad_tool_arguments(make_sim: SimFactory, dialect: str, rate: float) -> None:
    sim = await make_sim(quality={"bad_tool_arguments": rate})
    async with _client(sim) as client:
        arguments = await _arguments(client, dialect)
    assert _tool_arguments_invalid(arguments) is (rate == 1.0)
    if not rate:
        assert json.loads(arguments) == {"city": "simulated", "days": 1}


@pytest.mark.parametrize("dialect", ["chat", "responses-stream"])
async def test_bad_tool_arguments_come_malformed_or_missing_required_fields(make_sim: SimFactory,
                                                                            dialect: str) -> None:
    sim = await make_sim(quality={"bad_tool_arguments": 1.0})
    forms = set()
    async with _client(sim) as client:
        for i in range(16):
            arguments = await _arguments(client, dialect, f"Weather in city {i}?")
            assert _tool_arguments_invalid(arguments)
            try:
                forms.add("missing:" + ",".join(sorted(json.loads(arguments))))
            except json.JSONDecodeError:
                forms.add("malformed")
    assert forms == {"malformed", "missing:"}


@pytest.mark.parametrize("dialect", ["chat", "responses"])
async def test_text_knobs_leave_tool_calls_alone(make_sim: SimFactory, dialect: str) -> None:
    sim = await make_sim(quality={"short": 1.0, "off_topic": 1.0, "invalid_json": 1.0})
    async with _client(sim) as client:
        arguments = await _arguments(client, dialect)
    assert json.loads(arguments) == {"city": "simulated", "days": 1}


async def test_degraded_answers_are_counted_like_any_reply(make_sim: SimFactory) -> None:
    sim = await make_sim(quality={"short": 1.0})
    async with _client(sim) as client:
        completion = await client.chat.completions.create(model="m", messages=MESSAGES)
        chunks = [c async for c in await client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True})]
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


async def test_quality_per_model(make_sim: SimFactory) -> None:
    sim = await make_sim(qualities={"candidate": {"off_topic": 1.0}, "terse": {"short": 1.0}})
    async with _client(sim) as client:
        assert await _text(client, "chat", model="baseline") == HEALTHY_TEXT
        assert await _text(client, "chat", model="candidate") == OFF_TOPIC_REPLY
        assert await _text(client, "responses", model="terse") == "[simulated] lorem ipsum"


async def test_quality_applies_to_fixed_replies(make_sim: SimFactory) -> None:
    sim = await make_sim(replies={"m": "The capital of France is Paris, a city on the Seine."}, quality={"short": 1})
    async with _client(sim) as client:
        assert await _text(client, "chat-stream") == "The capital of"


async def _pattern(client: openai.AsyncOpenAI, prompts: list[str]) -> list[bool]:
    return [await _text(client, "chat", p) != HEALTHY_TEXT for p in prompts]


async def test_draws_are_reproducible_and_hold_their_rate(make_sim: SimFactory) -> None:
    prompts = [f"Question number {i}" for i in range(120)]
    settings: Any = {"quality": {"short": 0.5, "seed": 7}}
    first, second, reseeded = await make_sim(**settings), await make_sim(**settings), await make_sim(
        quality={"short": 0.5, "seed": 8})
    async with _client(first) as a, _client(second) as b, _client(reseeded) as c:
        pattern = await _pattern(a, prompts)
        assert await _pattern(b, prompts) == pattern  # another simulator, same seed: the same answers
        assert await _pattern(c, prompts) != pattern  # another seed: other requests
        # The same request again: the same outcome, once the settings are (re)set.
        async with httpx.AsyncClient(base_url=first.base_url.removesuffix("/v1")) as control:
            assert (await control.put("/_sim/behaviour", json=settings)).status_code == 200
        assert await _pattern(a, prompts) == pattern
    assert 0.35 < sum(pattern) / len(pattern) < 0.65


async def test_a_repeated_request_meets_each_defect_at_its_rate(make_sim: SimFactory) -> None:
    sim = await make_sim(quality={"off_topic": 0.25})
    async with _client(sim) as client:
        pattern = await _pattern(client, ["Say hello"] * 160)
        sim.state.replace_settings(SimulationSettings(quality=Quality(off_topic=0.25)))
        assert await _pattern(client, ["Say hello"] * 160) == pattern
    assert 0.12 < sum(pattern) / len(pattern) < 0.38


# --- the scripted judge ------------------------------------------------------------------------------------

GOOD = HEALTHY_TEXT
PAIRS = {  # request -> (the better answer, the worse one)
    "off topic": ("Say hello", GOOD, OFF_TOPIC_REPLY),
    "short": ("Say hello", GOOD, "[simulated] lorem ipsum"),
    "invalid json": ("Reply in JSON: what is 2 + 2?", '{"answer": "4", "confidence": 1}',
                     '{"answer": "4", "confidence": 1'),
    "invalid json, not said": ("What is 2 + 2?", '{"answer": "4", "confidence": 1}',
                               '{"answer": "4", "confidence": 1'),
}


async def _judge(client: openai.AsyncOpenAI, request: str, first: str, second: str, *, stream: bool = False,
                 model: str = "judge") -> tuple[str | None, Any]:
    messages: Any = judge_messages(RUBRIC, f"user: {request}", first, second)
    if not stream:
        completion = await client.chat.completions.create(model=model, messages=messages, max_tokens=200)
        text = completion.choices[0].message.content or ""
        assert json.loads(text)["reason"]
        return read_verdict(text), completion.usage
    chunks = [c async for c in await client.chat.completions.create(
        model=model, messages=messages, max_tokens=200, stream=True, stream_options={"include_usage": True})]
    return read_verdict("".join(c.choices[0].delta.content or "" for c in chunks if c.choices)), chunks[-1].usage


@pytest.mark.parametrize("case", list(PAIRS))
@pytest.mark.parametrize("stream", [False, True])
async def test_judge_picks_the_better_answer_in_both_orders(make_sim: SimFactory, case: str, stream: bool) -> None:
    request, better, worse = PAIRS[case]
    sim = await make_sim(judge={})
    async with _client(sim) as client:
        assert (await _judge(client, request, better, worse, stream=stream))[0] == "A"
        assert (await _judge(client, request, worse, better, stream=stream))[0] == "B"


async def test_judge_ties_on_equal_answers(make_sim: SimFactory) -> None:
    sim = await make_sim(judge={"noise": 0.0})
    other = "[simulated] ipsum lorem dolor sit amet consectetur adipiscing elit sed do eiusmod tempor"
    async with _client(sim) as client:
        for first, second in [(GOOD, GOOD), (GOOD, other), (other, GOOD), (OFF_TOPIC_REPLY, OFF_TOPIC_REPLY),
                              ("a <<<fenced>>> answer", "a <<<fenced>>> answer")]:
            assert (await _judge(client, "Say hello", first, second))[0] == "tie"


@pytest.mark.parametrize("position", ["A", "B"])
async def test_judge_position_bias(make_sim: SimFactory, position: str) -> None:
    sim = await make_sim(judge={"position_bias": position})
    async with _client(sim) as client:
        for request, better, worse in PAIRS.values():
            assert (await _judge(client, request, better, worse))[0] == position
            assert (await _judge(client, request, worse, better))[0] == position
        assert (await _judge(client, "Say hello", GOOD, GOOD))[0] == position


async def test_judge_usage_is_counted_like_any_reply(make_sim: SimFactory) -> None:
    sim = await make_sim(judge={})
    async with _client(sim) as client:
        completion = await client.chat.completions.create(
            model="judge", messages=judge_messages(RUBRIC, "user: Say hello", GOOD, OFF_TOPIC_REPLY),  # type: ignore[arg-type]
            max_tokens=200)
        _, streamed_usage = await _judge(client, "Say hello", GOOD, OFF_TOPIC_REPLY, stream=True)
    text = completion.choices[0].message.content or ""
    usage = completion.usage
    assert usage is not None and usage.completion_tokens == len(split_pieces(text)) > 0
    assert usage.prompt_tokens > 100  # the rubric and both answers
    assert streamed_usage is not None and streamed_usage.completion_tokens == usage.completion_tokens


async def test_judge_leaves_other_requests_alone_and_is_off_by_default(make_sim: SimFactory) -> None:
    judging, plain = await make_sim(judge={"position_bias": "A"}), await make_sim()
    async with _client(judging) as a, _client(plain) as b:
        assert await _text(a, "chat") == HEALTHY_TEXT
        assert await _text(a, "responses") == HEALTHY_TEXT
        messages: Any = judge_messages(RUBRIC, "user: Say hello", GOOD, OFF_TOPIC_REPLY)
        completion = await b.chat.completions.create(model="judge", messages=messages)
    assert completion.choices[0].message.content == HEALTHY_TEXT


async def test_judge_is_not_degraded_by_its_models_quality(make_sim: SimFactory) -> None:
    sim = await make_sim(judge={}, quality={"off_topic": 1.0, "short": 1.0})
    async with _client(sim) as client:
        assert (await _judge(client, "Say hello", GOOD, OFF_TOPIC_REPLY))[0] == "A"


@pytest.mark.parametrize("noise", [0.0, 0.3])
async def test_judge_noise_decides_some_equal_pairs(make_sim: SimFactory, noise: float) -> None:
    sim = await make_sim(judge={"noise": noise, "seed": 1})
    async with _client(sim) as client:
        verdicts = [(await _judge(client, f"Question number {i}", GOOD, GOOD))[0] for i in range(200)]
    assert None not in verdicts
    decisive = sum(v != "tie" for v in verdicts) / len(verdicts)
    if noise == 0:
        assert decisive == 0
    else:
        assert noise - 0.1 < decisive < noise + 0.1
        assert {"A", "B"} <= set(verdicts)


@pytest.mark.parametrize("identical", [True, False])
async def test_judge_noise_survives_the_gateways_two_orders(make_sim: SimFactory, identical: bool) -> None:
    """The gateway judges a pair in both orders and counts only a preference both share (migration.judge.combine):
    noise decides about its rate of such pairs, for identical answers and for different but equal ones."""
    sim = await make_sim(judge={"noise": 0.3, "seed": 2})
    other = GOOD if identical else "[simulated] ipsum lorem dolor sit amet consectetur adipiscing elit sed do"
    combined = []
    async with _client(sim) as client:
        for i in range(200):
            straight, _ = await _judge(client, f"Question number {i}", GOOD, other)
            swapped, _ = await _judge(client, f"Question number {i}", other, GOOD)
            first: Any = {"A": "baseline", "B": "candidate", "tie": "tie"}[straight or ""]
            second: Any = {"A": "candidate", "B": "baseline", "tie": "tie"}[swapped or ""]
            combined.append(combine(first, second))
    assert not any(flipped for _, flipped in combined)
    decisive = sum(preference != "tie" for preference, _ in combined) / len(combined)
    assert 0.2 < decisive < 0.4


async def test_noise_never_overturns_a_clear_verdict(make_sim: SimFactory) -> None:
    sim = await make_sim(judge={"noise": 1.0})
    async with _client(sim) as client:
        for i in range(20):
            assert (await _judge(client, f"Question {i}", GOOD, OFF_TOPIC_REPLY))[0] == "A"
            assert (await _judge(client, f"Question {i}", OFF_TOPIC_REPLY, GOOD))[0] == "B"
