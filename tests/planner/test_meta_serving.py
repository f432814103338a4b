"""The meta-model as the client sees it: listed, answered whole or streamed, fast path, metrics."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from planner.run import PlanRun
from tests.gateway.helpers import metric, scrape
from tests.planner.conftest import (
    CHEAP_M,
    GOAL,
    JOINER_ANSWER,
    JOINER_M,
    META,
    PLANNER_M,
    PRICES,
    STRONG_M,
    RigFactory,
    meta_config,
    plan_text,
    spent,
    task,
)
from tests.support import CLIENT_KEY

DIAMOND = [task("a"), task("b", ["a"]), task("c", ["a"], tier="strong"), task("d", ["b", "c"])]
# A long answer, so the stream carries it in several content chunks.
LONG_ANSWER = " ".join(f"word{i}" for i in range(30))


def test_models_lists_the_meta_model(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text(DIAMOND))
    ids = [m.id for m in rig.client.models.list().data]
    assert META in ids
    assert {"planner", "joiner", "cheap", "strong"} <= set(ids)


def test_non_streaming_answer_is_an_ordinary_completion(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text(DIAMOND))
    answer = rig.ask(trace=False)
    completion = answer.completion
    assert completion.object == "chat.completion"
    assert completion.model == META
    assert completion.id.startswith("chatcmpl-")
    assert answer.content == JOINER_ANSWER
    assert answer.finish_reason == "stop"
    assert answer.cutover == {"stop_reason": None, "cost_usd": answer.headers["x-cutover-cost-usd"]}
    assert answer.headers["x-cutover-provider"] == f"meta:{META}"
    assert answer.cost > 0
    # Without the trace option the answer carries no trace.
    assert "trace" not in answer.cutover
    with_trace = rig.ask()
    assert with_trace.trace["meta_model"] == META
    assert [p["tasks"] for p in with_trace.trace["plans"]] == [DIAMOND]


def test_stream_frames_progress_answer_finish_and_usage(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text(DIAMOND), joiner=json.dumps({"action": "finish", "answer": LONG_ANSWER}))
    stream = rig.client.chat.completions.create(
        model=META, messages=[{"role": "user", "content": GOAL}], stream=True,
        stream_options={"include_usage": True}, extra_body={"cutover": {"progress": True}},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.model == META for c in chunks)
    assert len({c.id for c in chunks}) == 1
    first, *middle, finish_chunk, usage_chunk = chunks
    assert first.choices[0].delta.role == "assistant"

    progress = [
        (c.choices[0].delta.model_extra or {}).get("cutover_progress") for c in middle
    ]
    lines = [p for p in progress if p is not None]
    assert sorted(lines) == sorted(
        f"task {t['id']} done ({STRONG_M if t['tier'] == 'strong' else CHEAP_M})\n" for t in DIAMOND)
    # d depends on everything else: its line comes last.
    assert lines[-1].startswith("task d done")
    content = [c.choices[0].delta.content for c in middle if c.choices[0].delta.content]
    assert len(content) > 1
    assert "".join(content) == LONG_ANSWER
    # Progress comes before the answer.
    first_content = next(i for i, c in enumerate(middle) if c.choices[0].delta.content)
    assert all(p is None for p in progress[first_content:])

    assert finish_chunk.choices[0].finish_reason == "stop"
    assert (finish_chunk.model_extra or {})["cutover"]["stop_reason"] is None
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    expected = spent(rig)
    assert usage_chunk.usage.total_tokens == expected.total_tokens
    assert usage_chunk.usage.prompt_tokens == expected.prompt_tokens


def test_stream_without_options_has_no_progress_and_no_usage_chunk(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text(DIAMOND))
    chunks = list(rig.client.chat.completions.create(
        model=META, messages=[{"role": "user", "content": GOAL}], stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert not any("cutover_progress" in (c.choices[0].delta.model_extra or {}) for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == JOINER_ANSWER
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_every_raw_frame_is_json_then_cost_and_done(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text(DIAMOND))
    body = {"model": META, "messages": [{"role": "user", "content": GOAL}], "stream": True,
            "cutover": {"progress": True, "trace": True}}
    with httpx.stream("POST", f"{rig.gw.base_url}/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    data = [line[len("data: "):] for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    frames = [json.loads(d) for d in data[:-1]]
    assert all(f["object"] == "chat.completion.chunk" for f in frames)
    # The trace travels on the finishing chunk when asked for.
    finishing = [f for f in frames if f["choices"] and f["choices"][0]["finish_reason"]]
    assert len(finishing) == 1
    trace = finishing[0]["cutover"]["trace"]
    assert {t["id"] for t in trace["tasks"]} == {"a", "b", "c", "d"}
    # The cost arrives as an SSE comment, equal to what the simulator charged.
    (comment,) = [line for line in lines if line.startswith(": x-cutover-cost-usd ")]
    assert Decimal(comment.split()[-1]) == spent(rig).cost


def _fail_the_join(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken_join(self: PlanRun, *args: Any) -> tuple[str, str]:
        raise RuntimeError("joiner state corrupted")

    monkeypatch.setattr(PlanRun, "_join", broken_join)


def test_a_run_that_fails_mid_stream_ends_in_an_sse_error_frame(
    make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig(plan=plan_text(DIAMOND))
    _fail_the_join(monkeypatch)
    stream = rig.client.chat.completions.create(
        model=META, messages=[{"role": "user", "content": GOAL}], stream=True,
        extra_body={"cutover": {"progress": True}},
    )
    received: list[Any] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk)
    assert not isinstance(caught.value, openai.APIStatusError)
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "stream_broken"
    # The stream had started: role and the four progress lines came before the error.
    progress = [c for c in received if "cutover_progress" in (c.choices[0].delta.model_extra or {})]
    assert len(progress) == 4
    assert not any(c.choices[0].delta.content for c in received)
    assert len(rig.requests(JOINER_M)) == 0
    text = scrape(rig.gw.root_url)
    assert metric(text, "cutover_pe_runs_total", meta_model=META, outcome="error", stop_reason="exception") == 1


def test_a_run_that_fails_without_streaming_is_a_503_not_a_500(
    make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig(plan=plan_text(DIAMOND))
    _fail_the_join(monkeypatch)
    with pytest.raises(openai.APIStatusError) as caught:
        rig.ask()
    assert caught.value.status_code == 503
    assert "joiner state corrupted" not in caught.value.message


def test_fast_path_sends_a_short_request_to_one_executor_call(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text(DIAMOND), meta=meta_config(fast_path={"enabled": True}))
    answer = rig.ask("What is the capital of France?")
    assert answer.finish_reason == "stop"
    assert answer.content.startswith("[simulated]")
    assert rig.requests(PLANNER_M) == [] and rig.requests(JOINER_M) == [] and rig.requests(STRONG_M) == []
    (call,) = rig.requests(CHEAP_M)
    assert call.body["messages"] == [{"role": "user", "content": "What is the capital of France?"}]
    trace = answer.trace
    assert trace["fast_path"] is True
    assert any("fast path" in note for note in trace["notes"])
    assert trace["plans"] == [] and trace["tasks"] == []
    assert [c["role"] for c in trace["calls"]] == ["fast_path"]
    expected = spent(rig)
    assert answer.completion.usage is not None and answer.completion.usage.total_tokens == expected.total_tokens
    assert answer.cost == expected.cost

    # A long request on the same gateway is planned.
    planned = rig.ask()
    assert planned.trace["fast_path"] is False
    assert len(rig.requests(PLANNER_M)) == 1


def test_fast_path_disabled_plans_even_a_short_request(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text(DIAMOND), meta=meta_config(fast_path={"enabled": False}))
    answer = rig.ask("What is the capital of France?")
    assert answer.content == JOINER_ANSWER
    assert answer.trace["fast_path"] is False
    assert not any("fast path" in note for note in answer.trace["notes"])
    assert len(rig.requests(PLANNER_M)) == 1
    assert len(rig.requests(JOINER_M)) == 1


def test_fast_path_is_only_for_a_single_short_user_message(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text(DIAMOND), meta=meta_config(fast_path={"enabled": True, "max_prompt_chars": 40}))
    conversation = [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Short one."},
    ]
    completion = rig.client.chat.completions.create(model=META, messages=conversation)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == JOINER_ANSWER
    rig.ask("A question that is just over forty characters long.")
    assert len(rig.requests(PLANNER_M)) == 2


def _histogram(text: str, name: str, **labels: str) -> tuple[float, float]:
    return metric(text, f"{name}_count", **labels), metric(text, f"{name}_sum", **labels)


def test_metrics_after_runs(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text(DIAMOND))
    answers = [rig.ask(), rig.ask()]
    text = scrape(rig.gw.root_url)
    labels = {"meta_model": META}
    assert metric(text, "cutover_pe_runs_total", **labels, outcome="stop", stop_reason="none") == 2
    assert _histogram(text, "cutover_pe_tasks_per_run", **labels) == (2, 8)
    calls = sum(1 + len(a.trace["tasks"]) + 1 for a in answers)
    assert _histogram(text, "cutover_pe_llm_calls_per_run", **labels) == (2, calls)
    count, total = _histogram(text, "cutover_pe_run_cost_usd", **labels)
    assert count == 2
    assert total == pytest.approx(float(sum(a.cost for a in answers)))
    # What the same tokens would have cost on the planner model.
    prompt = sum(a.completion.usage.prompt_tokens for a in answers if a.completion.usage)
    completion = sum(a.completion.usage.completion_tokens for a in answers if a.completion.usage)
    equivalent = (prompt * Decimal(PRICES[PLANNER_M]["input"]) + completion * Decimal(PRICES[PLANNER_M]["output"])
                  ) / 1_000_000
    count, total = _histogram(text, "cutover_pe_run_planner_equivalent_cost_usd", **labels)
    assert count == 2 and total == pytest.approx(float(equivalent))
    assert float(equivalent) > float(sum(a.cost for a in answers))
    count, total = _histogram(text, "cutover_pe_run_duration_seconds", **labels)
    assert count == 2
    assert 0 < total <= sum(a.seconds for a in answers)
    assert _histogram(text, "cutover_pe_task_duration_seconds", **labels, tier="cheap")[0] == 6
    assert _histogram(text, "cutover_pe_task_duration_seconds", **labels, tier="strong")[0] == 2
    count, total = _histogram(text, "cutover_pe_scheduler_overhead_seconds", **labels)
    assert count == 8
    assert 0 <= total < 1.0
    count, total = _histogram(text, "cutover_pe_task_queue_wait_seconds", **labels)
    assert count == 8 and total >= 0
    assert metric(text, "cutover_pe_replans_total", **labels) == 0
    # Internal calls are ordinary requests of their aliases, and the run is one request of the meta-model.
    assert metric(text, "cutover_requests_total", alias="planner", status_class="2xx") == 2
    assert metric(text, "cutover_requests_total", alias=META, status_class="2xx") == 2


def test_the_meta_model_answers_the_responses_api_too(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text(DIAMOND), joiner=json.dumps({"action": "finish", "answer": LONG_ANSWER}))
    response = rig.client.responses.create(model=META, input=GOAL)
    assert response.status == "completed" and response.output_text == LONG_ANSWER
    assert response.usage is not None and response.usage.total_tokens == spent(rig).total_tokens
    with rig.client.responses.stream(model=META, input=GOAL, previous_response_id=response.id) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == LONG_ANSWER and len(deltas) > 1
    # The earlier turn went to the planner with the new one: the meta-model continues a conversation too.
    planner_prompt = json.dumps(rig.requests(PLANNER_M)[-1].body["messages"])
    assert LONG_ANSWER in planner_prompt


@pytest.mark.parametrize("stream", [False, True])
def test_tools_offered_to_a_meta_model_without_tool_support_are_refused_not_dropped(
    make_rig: RigFactory, stream: bool,
) -> None:
    rig = make_rig(plan=plan_text(DIAMOND), meta=meta_config(client_tools=False))
    tools: Any = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    with pytest.raises(openai.BadRequestError) as caught:
        rig.client.chat.completions.create(model=META, messages=[{"role": "user", "content": GOAL}], tools=tools,
                                           stream=stream)
    assert caught.value.body["param"] == "tools"  # type: ignore[index]
    assert caught.value.body["code"] == "unsupported_parameter"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        rig.client.responses.create(model=META, input=GOAL, tool_choice="required")
    assert caught.value.body["param"] == "tool_choice"  # type: ignore[index]
    assert rig.all_requests() == []  # no planner call was made
    # A refused request is the client's: the meta-model still serves the next one.
    assert rig.ask(trace=False).content == JOINER_ANSWER
