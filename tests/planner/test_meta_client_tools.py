"""The client's own tools through the ordinary tool-call contract, with the official SDK's tool loop.

The planner (a simulator with a fixed reply) plans two weather lookups through the client's tool
and a comparison on the cheap executor; the client runs the lookups and sends the results back.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from openai import BadRequestError, OpenAI

from tests.planner.conftest import CHEAP_M, JOINER_ANSWER, META, RigFactory, meta_config, plan_text, task, user_text
from tests.support import CLIENT_KEY, BackgroundGateway

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                       "additionalProperties": False},
    },
}
QUESTION = ("Which of Paris and Berlin has the better weather for a picnic this afternoon? Check both cities and "
            "compare them, then recommend one.")
FORECAST = {"Paris": "Paris: 24C, sunny, light wind", "Berlin": "Berlin: 13C, rain showers"}


def weather_plan(**extra: Any) -> str:
    lookups = [{"id": f"w{i}", "tool": "get_weather", "arguments": {"city": city}, "deps": []}
               for i, city in enumerate(FORECAST, start=1)]
    compare = task("cmp", ["w1", "w2"], instruction="Compare the two forecasts for a picnic.")
    return plan_text([*lookups, compare], **extra)


def run_tool_loop(client: OpenAI, messages: list[Any], **kwargs: Any) -> tuple[list[Any], list[Any]]:
    """The SDK's plain tool loop: call, run every tool call, send the results back, until an answer."""
    answers = []
    batches = []
    for _ in range(6):
        completion = client.chat.completions.create(model=META, messages=messages, tools=[WEATHER_TOOL], **kwargs)
        answers.append(completion)
        message = completion.choices[0].message
        if completion.choices[0].finish_reason != "tool_calls":
            return answers, batches
        batches.append(message.tool_calls)
        messages.append(message)
        for call in message.tool_calls or ():
            city = json.loads(call.function.arguments)["city"]
            messages.append({"role": "tool", "tool_call_id": call.id, "content": FORECAST[city]})
    raise AssertionError("the tool loop did not end")


def test_sdk_tool_loop_gets_both_cities_in_one_parallel_batch(make_rig: RigFactory) -> None:
    rig = make_rig(plan=weather_plan())
    answers, batches = run_tool_loop(rig.client, [{"role": "user", "content": QUESTION}],
                                     extra_body={"cutover": {"trace": True}})
    assert len(batches) == 1
    calls = batches[0]
    assert [c.function.name for c in calls] == ["get_weather", "get_weather"]
    assert sorted(json.loads(c.function.arguments)["city"] for c in calls) == ["Berlin", "Paris"]
    assert answers[0].choices[0].message.content is None
    final = answers[-1]
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == JOINER_ANSWER
    # The comparison ran once, after both results, and saw both.
    compare = [r for r in rig.requests(CHEAP_M) if "Compare the two forecasts" in user_text(r)]
    assert len(compare) == 1
    assert FORECAST["Paris"] in user_text(compare[0]) and FORECAST["Berlin"] in user_text(compare[0])
    # One plan for the whole run, one joiner call at the end.
    assert len(rig.ok_requests("planner-m")) == 1 and len(rig.ok_requests("joiner-m")) == 1
    # Usage and cost: each answer bills its own round; the run's totals add them up.
    extras = [a.model_extra["cutover"] for a in answers]  # type: ignore[index]
    assert extras[0]["round"] == 0 and extras[1]["round"] == 1 and extras[0]["run_id"] == extras[1]["run_id"]
    assert Decimal(extras[1]["run_cost_usd"]) == sum(Decimal(e["cost_usd"]) for e in extras)
    assert extras[1]["run_usage"]["total_tokens"] == sum(a.usage.total_tokens for a in answers)  # type: ignore[union-attr]
    rounds = extras[1]["trace"]["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]
    assert [c["tool"] for c in rounds[0]["tool_calls"]] == ["get_weather", "get_weather"]
    assert "cmp" in rounds[1]["tasks_finished"]


def test_streamed_tool_calls_accumulate_in_the_sdk(make_rig: RigFactory) -> None:
    rig = make_rig(plan=weather_plan())
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    with rig.client.chat.completions.stream(model=META, messages=messages, tools=[WEATHER_TOOL]) as stream:
        first = stream.get_final_completion()
    assert first.choices[0].finish_reason == "tool_calls"
    calls = first.choices[0].message.tool_calls or []
    assert sorted(json.loads(c.function.arguments)["city"] for c in calls) == ["Berlin", "Paris"]  # type: ignore[union-attr]
    messages.append(first.choices[0].message)
    for call in calls:
        city = json.loads(call.function.arguments)["city"]  # type: ignore[union-attr]
        messages.append({"role": "tool", "tool_call_id": call.id, "content": FORECAST[city]})
    with rig.client.chat.completions.stream(model=META, messages=messages, tools=[WEATHER_TOOL]) as stream:
        second = stream.get_final_completion()
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == JOINER_ANSWER


def test_parallel_tool_calls_false_hands_back_one_call_at_a_time(make_rig: RigFactory) -> None:
    rig = make_rig(plan=weather_plan())
    answers, batches = run_tool_loop(rig.client, [{"role": "user", "content": QUESTION}], parallel_tool_calls=False)
    assert [len(b) for b in batches] == [1, 1]
    assert answers[-1].choices[0].message.content == JOINER_ANSWER


def test_a_retried_round_gets_the_same_answer_and_runs_nothing_twice(make_rig: RigFactory) -> None:
    rig = make_rig(plan=weather_plan())
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    first = rig.client.chat.completions.create(model=META, messages=messages, tools=[WEATHER_TOOL])
    messages.append(first.choices[0].message)
    for call in first.choices[0].message.tool_calls or ():
        city = json.loads(call.function.arguments)["city"]  # type: ignore[union-attr]
        messages.append({"role": "tool", "tool_call_id": call.id, "content": FORECAST[city]})
    second = rig.client.chat.completions.create(model=META, messages=messages, tools=[WEATHER_TOOL])
    again = rig.client.chat.completions.create(model=META, messages=messages, tools=[WEATHER_TOOL])
    assert again.choices[0].message.content == second.choices[0].message.content == JOINER_ANSWER
    assert len(rig.ok_requests("joiner-m")) == 1
    assert len([r for r in rig.requests(CHEAP_M) if "Compare the two forecasts" in user_text(r)]) == 1


def test_a_client_retry_with_the_same_idempotency_key_gets_the_same_call_ids(make_rig: RigFactory) -> None:
    rig = make_rig(plan=weather_plan())
    messages = [{"role": "user", "content": QUESTION}]
    headers = {"Idempotency-Key": "tool-loop-1"}
    first = rig.client.chat.completions.create(model=META, messages=messages, tools=[WEATHER_TOOL],
                                               extra_headers=headers)
    again = rig.client.chat.completions.create(model=META, messages=messages, tools=[WEATHER_TOOL],
                                               extra_headers=headers)
    ids = [c.id for c in first.choices[0].message.tool_calls or ()]
    assert ids and ids == [c.id for c in again.choices[0].message.tool_calls or ()]
    assert len(rig.ok_requests("planner-m")) == 1


def test_tool_results_for_an_unknown_run_are_the_clients_400(make_rig: RigFactory) -> None:
    rig = make_rig(plan=weather_plan())
    forged = "call_" + "ab" * 12 + "_0_0"
    messages = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": forged, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": forged, "content": "sunny"},
    ]
    with pytest.raises(BadRequestError) as caught:
        rig.client.chat.completions.create(model=META, messages=messages, tools=[WEATHER_TOOL])  # type: ignore[arg-type]
    assert caught.value.body["code"] == "run_not_found"  # type: ignore[index]


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, "tool_choice"),
    ({"tools": [{"type": "custom", "custom": {"name": "grep"}}]}, "tools"),
])
def test_tool_forms_a_plan_cannot_honour_are_400(make_rig: RigFactory, kwargs: dict[str, Any], param: str) -> None:
    rig = make_rig(plan=weather_plan())
    arguments = {"tools": [WEATHER_TOOL], **kwargs}
    with pytest.raises(BadRequestError) as caught:
        rig.client.chat.completions.create(model=META, messages=[{"role": "user", "content": QUESTION}], **arguments)
    assert caught.value.body["param"] == param  # type: ignore[index]
    assert not rig.all_requests()


def test_tools_offered_to_a_meta_model_without_tool_support_are_400(make_rig: RigFactory) -> None:
    rig = make_rig(plan=weather_plan(), meta=meta_config(client_tools=False))
    with pytest.raises(BadRequestError) as caught:
        rig.client.chat.completions.create(model=META, messages=[{"role": "user", "content": QUESTION}],
                                           tools=[WEATHER_TOOL])  # type: ignore[list-item]
    assert caught.value.status_code == 400 and caught.value.body["param"] == "tools"  # type: ignore[index]
    # tool_choice "none" withholds the tools: an ordinary run.
    answer = rig.client.chat.completions.create(model=META, messages=[{"role": "user", "content": QUESTION}],
                                                tools=[WEATHER_TOOL], tool_choice="none")  # type: ignore[list-item]
    assert answer.choices[0].finish_reason == "stop"


def _repair_calls(answer: Any) -> list[dict[str, Any]]:
    trace = answer.model_extra["cutover"]["trace"]
    return [c for c in trace["calls"] if c["role"] == "repair_arguments"]


def test_arguments_that_do_not_fit_the_schema_are_repaired_once(make_rig: RigFactory) -> None:
    plan = plan_text([{"id": "w1", "tool": "get_weather", "arguments": '{"town": "Paris"}', "deps": []}])
    rig = make_rig(plan=plan, cheap_settings={"replies": {CHEAP_M: '{"city": "Paris"}'}})
    first = rig.client.chat.completions.create(model=META, messages=[{"role": "user", "content": QUESTION}],
                                               tools=[WEATHER_TOOL], extra_body={"cutover": {"trace": True}})
    calls = first.choices[0].message.tool_calls or []
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}]  # type: ignore[union-attr]
    assert len(_repair_calls(first)) == 1
    repair = rig.requests(CHEAP_M)[0]
    assert "town" in user_text(repair) and "city" in user_text(repair)


def test_arguments_still_wrong_after_the_repair_fail_the_task(make_rig: RigFactory) -> None:
    plan = plan_text([
        {"id": "w1", "tool": "get_weather", "arguments": {"town": "Paris"}, "deps": []},
        task("use", ["w1"], instruction="Say whether to picnic."),
    ])
    rig = make_rig(plan=plan, cheap_settings={"replies": {CHEAP_M: '{"town": "still Paris"}'}})
    answer = rig.client.chat.completions.create(model=META, messages=[{"role": "user", "content": QUESTION}],
                                                tools=[WEATHER_TOOL], extra_body={"cutover": {"trace": True}})
    assert answer.choices[0].finish_reason == "stop" and not answer.choices[0].message.tool_calls
    assert len(_repair_calls(answer)) == 1
    tasks = {t["id"]: t for t in answer.model_extra["cutover"]["trace"]["tasks"]}  # type: ignore[index]
    assert tasks["w1"]["status"] == "failed" and "after one repair" in tasks["w1"]["error"]
    assert tasks["use"]["status"] == "skipped"
    # The only cheap call was the repair: the dependent task never ran.
    assert len(rig.requests(CHEAP_M)) == 1


def test_max_tool_calls_stops_a_planner_asking_for_a_hundred(make_rig: RigFactory) -> None:
    lookups = [{"id": f"w{i}", "tool": "get_weather", "arguments": {"city": f"City {i}"}, "deps": []}
               for i in range(100)]
    meta = meta_config(caps={"max_tool_calls": 16, "max_tasks": 128},
                       shape={"max_tasks_per_round": 128, "max_fan_in": 64})
    rig = make_rig(plan=plan_text(lookups), meta=meta)
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    first = rig.client.chat.completions.create(model=META, messages=messages, tools=[WEATHER_TOOL])
    calls = first.choices[0].message.tool_calls or []
    assert first.choices[0].finish_reason == "tool_calls" and len(calls) == 16
    messages.append(first.choices[0].message)
    messages += [{"role": "tool", "tool_call_id": c.id, "content": "fine"} for c in calls]
    second = rig.client.chat.completions.create(model=META, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "length"
    assert not second.choices[0].message.tool_calls
    assert second.model_extra["cutover"]["stop_reason"] == "max_tool_calls"  # type: ignore[index]


def test_a_client_retry_after_a_restart_gets_the_same_calls_from_the_store(
    make_rig: RigFactory, tmp_path: Path,
) -> None:
    rig = make_rig(plan=weather_plan(), extra={"store": {"backend": "sqlite", "path": str(tmp_path / "s.sqlite")}})
    messages = [{"role": "user", "content": QUESTION}]
    headers = {"Idempotency-Key": "tool-loop-restart"}
    first = rig.client.chat.completions.create(model=META, messages=messages, tools=[WEATHER_TOOL],
                                               extra_headers=headers)
    # The same gateway config on a fresh process state: only the store remembers the run.
    rig.gw.stop()
    again_gw = BackgroundGateway(rig.gw.config).start()
    try:
        client = OpenAI(base_url=again_gw.base_url, api_key=CLIENT_KEY, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model=META, messages=messages, tools=[WEATHER_TOOL],
                                                               extra_headers=headers)
        again = raw.parse()
        client.close()
    finally:
        again_gw.stop()
    assert [c.id for c in again.choices[0].message.tool_calls or ()] == [
        c.id for c in first.choices[0].message.tool_calls or ()]
    assert len(rig.ok_requests("planner-m")) == 1
    assert Decimal(raw.headers["x-cutover-cost-usd"]) == 0  # nothing was spent again


RESPONSES_TOOL = {"type": "function", "name": "get_weather", "description": "The current weather in a city.",
                  "parameters": WEATHER_TOOL["function"]["parameters"]}  # type: ignore[index]


@pytest.mark.parametrize("chained", [True, False])
def test_the_responses_api_tool_loop(make_rig: RigFactory, chained: bool) -> None:
    """function_call items out, function_call_output items back: by previous_response_id, or the whole
    conversation resent."""
    rig = make_rig(plan=weather_plan())
    first = rig.client.responses.create(model=META, input=QUESTION, tools=[RESPONSES_TOOL])  # type: ignore[list-item]
    calls = [item for item in first.output if item.type == "function_call"]
    assert sorted(json.loads(c.arguments)["city"] for c in calls) == ["Berlin", "Paris"]
    outputs: list[Any] = [{"type": "function_call_output", "call_id": c.call_id,
                           "output": FORECAST[json.loads(c.arguments)["city"]]} for c in calls]
    if chained:
        second = rig.client.responses.create(model=META, previous_response_id=first.id, input=outputs,
                                             tools=[RESPONSES_TOOL])  # type: ignore[list-item]
    else:
        history = [{"role": "user", "content": QUESTION}, *[c.model_dump(exclude_none=True) for c in calls], *outputs]
        second = rig.client.responses.create(model=META, input=history, tools=[RESPONSES_TOOL],  # type: ignore[list-item]
                                             store=False)
    assert second.output_text == JOINER_ANSWER
    assert len(rig.ok_requests("planner-m")) == 1


def test_a_plan_whose_last_task_writes_the_answer_skips_the_joiner(make_rig: RigFactory) -> None:
    rig = make_rig(plan=weather_plan(), cheap_settings={"replies": {CHEAP_M: "Paris: picnic weather."}})
    plan = json.loads(weather_plan())
    rig.planner.set_settings(rig.planner.settings.model_copy(
        update={"replies": {"planner-m": json.dumps({**plan, "answer_from": "cmp"})}}))
    answers, _ = run_tool_loop(rig.client, [{"role": "user", "content": QUESTION}],
                               extra_body={"cutover": {"trace": True}})
    assert answers[-1].choices[0].message.content == "Paris: picnic weather."
    assert rig.ok_requests("joiner-m") == []
    notes = answers[-1].model_extra["cutover"]["trace"]["notes"]  # type: ignore[index]
    assert "answer taken from task cmp; joiner skipped" in notes


def test_answer_from_is_not_trusted_when_a_task_failed(make_rig: RigFactory) -> None:
    plan = json.loads(weather_plan())
    rig = make_rig(plan=json.dumps({**plan, "answer_from": "cmp"}))
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    first = rig.client.chat.completions.create(model=META, messages=messages, tools=[WEATHER_TOOL])
    messages.append(first.choices[0].message)
    # The comparison fails: its output cannot be the answer, so the joiner decides.
    rig.cheap.set_settings(rig.cheap.settings.model_copy(update={"error_rate": 1.0,
                                                                 "error_kinds": {"server_error": 1.0}}))
    for call in first.choices[0].message.tool_calls or ():
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny"})
    second = rig.client.chat.completions.create(model=META, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == JOINER_ANSWER
    assert len(rig.ok_requests("joiner-m")) == 1
