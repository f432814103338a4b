"""Valid plans of each shape run the right tasks with the right inputs, concurrently, and the
client's usage and cost add up every internal call."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from simulator import estimate_prompt_tokens
from tests.planner.conftest import (
    CHEAP_M,
    JOINER_ANSWER,
    JOINER_M,
    PLANNER_M,
    STRONG_M,
    Answer,
    Rig,
    RigFactory,
    always_failing,
    executor_request_for,
    input_blocks,
    meta_config,
    overlap_peak,
    plan_text,
    spent,
    task,
    user_text,
)

PARALLEL = [task(f"p{i}") for i in range(8)]
DIAMOND = [task("a"), task("b", ["a"]), task("c", ["a"]), task("d", ["b", "c"])]
CHAIN = [task("s1"), task("s2", ["s1"]), task("s3", ["s2"]), task("s4", ["s3"])]


def _check_ran_with_inputs(rig: Rig, answer: Answer, tasks: list[dict[str, Any]]) -> None:
    assert answer.finish_reason == "stop"
    assert answer.content == JOINER_ANSWER
    assert answer.cutover["stop_reason"] is None
    assert {tid: t["status"] for tid, t in answer.tasks().items()} == {t["id"]: "ok" for t in tasks}
    assert len(rig.requests(PLANNER_M)) == 1
    assert len(rig.requests(CHEAP_M)) == len(tasks)
    output = rig.cheap.settings  # executors answer filler text of output_tokens pieces
    assert output.output_tokens > 0
    for spec in tasks:
        (record,) = executor_request_for(rig, spec["instruction"])
        assert input_blocks(record) == dict.fromkeys(spec["deps"], "ok"), spec["id"]
        assert record.body["max_tokens"] == spec["max_tokens"]
        # The dependency's output itself is inside its block.
        for dep in spec["deps"]:
            assert f'<<<result id="{dep}" status="ok">>>\n[simulated]' in user_text(record)
            assert f"<<<end {dep}>>>" in user_text(record)
    # The joiner sees the plan's final results (those no task consumed), each once.
    (join,) = rig.requests(JOINER_M)
    consumed = {dep for t in tasks for dep in t["deps"]}
    assert input_blocks(join) == {t["id"]: "ok" for t in tasks if t["id"] not in consumed}
    assert "Combine the results into the report." in user_text(join)


@pytest.mark.parametrize("tasks", [PARALLEL, DIAMOND, CHAIN], ids=["parallel8", "diamond", "chain"])
def test_each_shape_runs_its_tasks_with_exactly_their_dependencies(
    make_rig: RigFactory, tasks: list[dict[str, Any]]
) -> None:
    rig = make_rig(plan=plan_text(tasks), meta=meta_config(per_alias_concurrency=8))
    answer = rig.ask()
    _check_ran_with_inputs(rig, answer, tasks)


def test_dependent_tasks_start_only_after_their_dependencies_ended(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text(DIAMOND), cheap_settings={"first_token_ms": 60})
    rig.ask()
    by_id = {spec["id"]: executor_request_for(rig, spec["instruction"])[0] for spec in DIAMOND}
    for spec in DIAMOND:
        for dep in spec["deps"]:
            ended = by_id[dep].ended_at
            assert ended is not None and by_id[spec["id"]].started_at >= ended, (dep, spec["id"])
    # b and c only need a: they run side by side.
    assert overlap_peak([(by_id[t].started_at, by_id[t].ended_at or 0.0) for t in ("b", "c")]) == 2


@pytest.mark.parametrize(("concurrency", "per_alias"), [(5, 8), (8, 3)])
def test_parallel_tasks_overlap_up_to_the_concurrency_limit(
    make_rig: RigFactory, concurrency: int, per_alias: int
) -> None:
    # 400 ms a task: long enough that a loaded 2-core machine still starts a whole wave before any task ends.
    rig = make_rig(plan=plan_text(PARALLEL), cheap_settings={"first_token_ms": 400},
                   meta=meta_config(concurrency=concurrency, per_alias_concurrency=per_alias))
    answer = rig.ask()
    assert answer.finish_reason == "stop"
    records = rig.requests(CHEAP_M)
    assert len(records) == 8
    intervals = [(r.started_at, r.ended_at) for r in records]
    assert all(end is not None for _, end in intervals)
    limit = min(concurrency, per_alias)
    peak = overlap_peak([(start, end or 0.0) for start, end in intervals])
    # Never more than the limit at once; really concurrent (a serial run would peak at 1).
    assert 2 <= peak <= limit, (peak, limit)
    first_wave_end = min(end or 0.0 for _, end in intervals)
    # The first `limit` tasks all started before any of them finished.
    assert sum(1 for start, _ in intervals if start < first_wave_end) == limit
    # Generous: 8 tasks of 400 ms in two waves (0.8 s), far below 8 x 400 ms run one by one.
    assert max(end or 0.0 for _, end in intervals) - min(start for start, _ in intervals) < 2.5


def test_default_concurrency_is_five(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text(PARALLEL), cheap_settings={"first_token_ms": 150})
    rig.ask()
    peak = overlap_peak([(r.started_at, r.ended_at or 0.0) for r in rig.requests(CHEAP_M)])
    assert 2 <= peak <= 5


def test_usage_and_cost_sum_every_internal_call(make_rig: RigFactory) -> None:
    tasks = [task("a"), task("b", tier="strong", max_tokens=5), task("c", ["a", "b"], max_tokens=200)]
    rig = make_rig(plan=plan_text(tasks))
    answer = rig.ask()
    assert answer.finish_reason == "stop"
    expected = spent(rig)
    assert expected.calls == 5  # planner, three tasks, joiner
    usage = answer.completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        expected.prompt_tokens, expected.completion_tokens, expected.total_tokens)
    # b's completion was cut by its max_tokens, as the simulator counts it.
    assert answer.tasks()["b"]["completion_tokens"] == 5
    assert answer.cost == expected.cost
    assert Decimal(answer.cutover["cost_usd"]) == expected.cost

    trace = answer.trace
    entries = [*trace["calls"], *trace["tasks"]]
    assert sum(e["prompt_tokens"] for e in entries) == usage.prompt_tokens
    assert sum(e["completion_tokens"] for e in entries) == usage.completion_tokens
    assert sum(Decimal(e["cost_usd"]) for e in entries) == answer.cost
    assert [c["role"] for c in trace["calls"]] == ["plan", "join"]
    assert answer.tasks()["b"]["model"].endswith(STRONG_M)
    # Each traced call's prompt tokens are what the simulator counts for that request.
    (planner_request,) = rig.requests(PLANNER_M)
    assert trace["calls"][0]["prompt_tokens"] == estimate_prompt_tokens(planner_request.body["messages"])


def test_streamed_usage_matches_the_simulator_too(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text(DIAMOND))
    stream = rig.client.chat.completions.create(
        model="pe", messages=[{"role": "user", "content": "x" * 200}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    expected = spent(rig)
    assert (usage.prompt_tokens, usage.completion_tokens) == (expected.prompt_tokens, expected.completion_tokens)


def test_a_failed_task_skips_its_dependents_while_independent_work_and_the_joiner_go_on(
    make_rig: RigFactory,
) -> None:
    tasks = [
        task("a"), task("b", tier="strong"), task("c", ["b"]), task("d", ["a"]), task("e", ["c", "d"]),
        task("f", ["d"]),
    ]
    rig = make_rig(plan=plan_text(tasks), strong_settings=always_failing())
    answer = rig.ask()
    assert answer.finish_reason == "stop"
    assert answer.content == JOINER_ANSWER
    statuses = {tid: t["status"] for tid, t in answer.tasks().items()}
    assert statuses == {"a": "ok", "b": "failed", "c": "skipped", "d": "ok", "e": "skipped", "f": "ok"}
    traced = answer.tasks()
    assert traced["b"]["attempts"] == 2  # one retry of the task (task_retries defaults to 1)
    assert "502" in traced["b"]["error"]
    # Skips name the failure that caused them, also two levels down.
    assert traced["c"]["error"] == traced["e"]["error"] == "dependency 'b' failed"
    # Two task attempts, each with two attempts on the upstream target.
    assert [r.outcome for r in rig.requests(STRONG_M)] == ["server_error"] * 4
    ran = {r for r in ("a", "d", "f") if executor_request_for(rig, f"Do step {r} of the report.")}
    assert ran == {"a", "d", "f"}
    assert not executor_request_for(rig, "Do step c of the report.")
    assert not executor_request_for(rig, "Do step e of the report.")
    # The joiner still answers, and is told which results failed or were skipped (and the final results;
    # a and d were consumed by later tasks).
    (join,) = rig.requests(JOINER_M)
    assert input_blocks(join) == {"b": "failed", "c": "skipped", "e": "skipped", "f": "ok"}
    # Failed attempts are still calls: every planner, task attempt and joiner call is counted.
    assert answer.trace["budget_left"]["llm_calls"] == 64 - (1 + 2 + 3 + 1)


def test_an_output_cut_at_max_tokens_is_marked_for_its_readers_and_in_the_trace(make_rig: RigFactory) -> None:
    # The cheap model writes 12 tokens: a's cap of 5 cuts it, b's cap of 64 does not.
    tasks = [task("a", max_tokens=5), task("b", ["a"]), task("c", ["b"])]
    rig = make_rig(plan=plan_text(tasks))
    answer = rig.ask()
    assert answer.finish_reason == "stop"
    traced = answer.tasks()
    assert (traced["a"]["status"], traced["a"]["finish_reason"]) == ("ok", "length")
    assert traced["b"]["finish_reason"] == traced["c"]["finish_reason"] == "stop"
    marker = "the model stopped at this task's max_tokens"
    (b_request,) = executor_request_for(rig, "Do step b of the report.")
    (c_request,) = executor_request_for(rig, "Do step c of the report.")
    assert marker in user_text(b_request)  # b reads a's output, and learns it was cut
    assert marker not in user_text(c_request)  # c reads b's, which was complete
