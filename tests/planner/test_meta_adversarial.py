"""Adversarial planners, joiners and upstreams: every run stays inside its caps, ends by its deadline
(plus a small margin) and answers with a completion, never a 500."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

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
    Answer,
    Rig,
    RigFactory,
    always_failing,
    executor_request_for,
    input_blocks,
    meta_config,
    plan_text,
    replan,
    spent,
    task,
    user_text,
)

DEFAULT_CALLS = 64
# Answer once, then fail: the planner alias falls over to its next target, which plans differently.
ONCE = {"script": ["ok"], **always_failing()}


def _check_bounded(
    rig: Rig, answer: Answer, *, max_calls: int = DEFAULT_CALLS, deadline_s: float = 120.0, abandoned: str = ""
) -> None:
    """What every run must respect, whatever the planner wrote."""
    assert answer.seconds < deadline_s + 1.0
    trace = answer.trace
    calls = len(trace["calls"]) + sum(t["attempts"] for t in trace["tasks"])
    assert calls <= max_calls
    # Every upstream request that answered is a call the budget counted (failed ones may add retries).
    assert len([r for r in rig.all_requests() if r.outcome == "ok"]) <= calls
    usage = answer.completion.usage
    assert usage is not None
    expected = spent(rig, abandoned=[abandoned])
    assert (usage.prompt_tokens, usage.completion_tokens) == (expected.prompt_tokens, expected.completion_tokens)
    assert answer.cost == expected.cost


# Plans that fail validation twice: one repair, then a single planner completion --------------

CYCLE = plan_text([task("a", ["b"]), task("b", ["a"])])
UNKNOWN = plan_text([task("a"), task("b", ["nope"])])
FORWARD = plan_text([task("a", ["b"]), task("b")])
SELF = plan_text([task("a", ["a"])])
HUGE = plan_text([task(f"t{i}") for i in range(100)])
DEEP = plan_text([task("s0"), *[task(f"s{i}", [f"s{i - 1}"]) for i in range(1, 10)]])
FAN_IN = plan_text([*[task(f"i{i}") for i in range(9)], task("sum", [f"i{i}" for i in range(9)])])
BAD_FIELDS = json.dumps({"tasks": [{"id": "a b", "instruction": "", "deps": "x", "tier": "gold", "max_tokens": 0}],
                         "final_instruction": "x", "extra": 1})
NOT_JSON = "Sure! {\"tasks\": [ this is not json at all"
PROSE = "I think we should first research the cities and then compare them."


@pytest.mark.parametrize(("reply", "complaint"), [
    (CYCLE, "cycle"),
    (UNKNOWN, "unknown id 'nope'"),
    (FORWARD, "which is listed later"),
    (SELF, "depends on itself"),
    (HUGE, "more than the limit of 16 per round"),
    (DEEP, "more than the limit of 8"),
    (FAN_IN, "depends on 9 tasks"),
    (BAD_FIELDS, "tier 'gold'"),
    (NOT_JSON, "never closed"),
    (PROSE, "no JSON object found"),
], ids=["cycle", "unknown-ref", "forward-ref", "self-ref", "100-tasks", "too-deep", "fan-in", "bad-fields",
        "invalid-json", "prose"])
def test_a_plan_invalid_twice_falls_back_to_one_planner_completion(
    make_rig: RigFactory, reply: str, complaint: str
) -> None:
    rig = make_rig(plan=reply)
    answer = rig.ask()
    _check_bounded(rig, answer)
    assert answer.finish_reason == "stop"
    assert answer.cutover["stop_reason"] is None
    # The fallback completion's text is the answer (here the planner's reply once more).
    assert answer.content == reply
    plan_call, repair_call, fallback_call = rig.requests(PLANNER_M)
    assert plan_call.body["response_format"]["type"] == "json_schema"
    assert plan_call.body["response_format"]["json_schema"]["strict"] is True
    # The repair shows the planner its own answer and what was wrong with it.
    assert repair_call.body["messages"][-2] == {"role": "assistant", "content": reply[:8000]}
    assert complaint in repair_call.body["messages"][-1]["content"]
    assert "response_format" not in fallback_call.body
    assert fallback_call.body["messages"] == [{"role": "user", "content": GOAL}]
    assert rig.requests(CHEAP_M) == rig.requests(STRONG_M) == rig.requests(JOINER_M) == []
    trace = answer.trace
    assert [c["role"] for c in trace["calls"]] == ["plan", "repair", "fallback"]
    assert trace["plans"] == [] and trace["tasks"] == []
    notes = trace["notes"]
    assert notes[0].startswith("plan rejected:") and complaint in notes[0]
    assert notes[1].startswith("repair rejected:")
    assert "no usable plan after one repair" in notes[2]


def test_a_repaired_plan_is_used(make_rig: RigFactory) -> None:
    # The first answer is invalid, the repair (by the planner's fallback target) is valid.
    good = plan_text([task("a"), task("b", ["a"])])
    rig = make_rig(plan=CYCLE, planner_settings=ONCE, more_planners=[(good, {})])
    answer = rig.ask()
    assert answer.content == JOINER_ANSWER
    assert [c["role"] for c in answer.trace["calls"]] == ["plan", "repair", "join"]
    assert len(rig.requests(CHEAP_M)) == 2
    assert "cycle" in answer.trace["notes"][0]


def test_a_plan_in_code_fences_with_chatter_is_accepted(make_rig: RigFactory) -> None:
    tasks = [task("a"), task("b", ["a"])]
    reply = (
        "Sure! Here is the plan you asked for {as JSON}:\n```json\n"
        + json.dumps({"tasks": tasks, "final_instruction": "Combine."}, indent=2)
        + "\n```\nLet me know if you want changes. {not json}"
    )
    rig = make_rig(plan=reply)
    answer = rig.ask()
    _check_bounded(rig, answer)
    assert answer.content == JOINER_ANSWER
    assert answer.finish_reason == "stop"
    assert len(rig.requests(PLANNER_M)) == 1
    assert answer.trace["notes"] == []
    assert answer.trace["plans"] == [{"tasks": tasks, "final_instruction": "Combine."}]
    (b_call,) = executor_request_for(rig, "Do step b of the report.")
    assert input_blocks(b_call) == {"a": "ok"}


# Joiners that never finish, and re-plans ----------------------------------------------------------

ROUND2 = [task("r2a", instruction="Find cycling statistics for each city."),
          task("r2b", ["r2a", "a"], instruction="Rank the cities using the statistics.")]
ROUND3 = [task("r3a", ["r2b"], instruction="Write a closing paragraph about commuting.")]


def test_a_joiner_that_always_replans_stops_at_max_replans(make_rig: RigFactory) -> None:
    rig = make_rig(
        plan=plan_text([task("a")]), joiner=replan(), planner_settings=ONCE,
        more_planners=[(plan_text(ROUND2), ONCE), (plan_text(ROUND3), {})],
        meta=meta_config(caps={"max_replans": 2}),
    )
    answer = rig.ask()
    _check_bounded(rig, answer)
    assert answer.finish_reason == "length"
    assert answer.cutover["stop_reason"] == "max_replans"
    trace = answer.trace
    assert trace["stop_reason"] == "max_replans"
    assert trace["replans"] == 2
    assert len(trace["plans"]) == 3
    assert {t["id"]: t["status"] for t in trace["tasks"]} == dict.fromkeys(("a", "r2a", "r2b", "r3a"), "ok")
    # Three joins said replan; the answer is then written from the partial results.
    assert [c["role"] for c in trace["calls"]] == ["plan", "join", "plan", "join", "plan", "join", "final"]
    assert len(rig.ok_requests(JOINER_M)) == 4
    final = rig.requests(JOINER_M)[-1]
    assert "max_replans" in final.body["messages"][0]["content"]
    assert input_blocks(final) == dict.fromkeys(("a", "r2a", "r2b", "r3a"), "ok")
    # A re-plan sees the feedback and the results so far; later tasks get earlier rounds' results.
    replan_prompt = rig.ok_requests(f"{PLANNER_M}2")[0]
    assert "Not enough detail yet" in user_text(replan_prompt)
    assert input_blocks(replan_prompt) == {"a": "ok"}
    (r2b,) = executor_request_for(rig, "Rank the cities using the statistics.")
    assert input_blocks(r2b) == {"r2a": "ok", "a": "ok"}
    assert metric(scrape(rig.gw.root_url), "cutover_pe_replans_total", meta_model=META) == 2


def test_no_replans_allowed_stops_at_the_first_replan(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text([task("a")]), joiner=replan(), meta=meta_config(caps={"max_replans": 0}))
    answer = rig.ask()
    _check_bounded(rig, answer)
    assert (answer.finish_reason, answer.cutover["stop_reason"]) == ("length", "max_replans")
    assert len(rig.requests(PLANNER_M)) == 1
    assert [c["role"] for c in answer.trace["calls"]] == ["plan", "join", "final"]


def test_a_replan_that_repeats_finished_work_stops_the_loop(make_rig: RigFactory) -> None:
    first = [task("a", instruction="Collect bike lane lengths for Amsterdam."),
             task("b", instruction="Collect bike lane lengths for Berlin.")]
    # New ids, the same work (one trivially rephrased).
    again = [task("a2", instruction="Collect bike lane lengths for Amsterdam."),
             task("b2", instruction="collect bike-lane lengths for BERLIN")]
    rig = make_rig(plan=plan_text(first), joiner=replan(), planner_settings=ONCE,
                   more_planners=[(plan_text(again), {})], meta=meta_config(caps={"max_replans": 3}))
    answer = rig.ask()
    _check_bounded(rig, answer)
    assert (answer.finish_reason, answer.cutover["stop_reason"]) == ("length", "repeated_work")
    assert answer.trace["replans"] == 0
    # The repeated tasks never ran.
    assert {t["id"] for t in answer.trace["tasks"]} == {"a", "b"}
    assert len(rig.requests(CHEAP_M)) == 2


def test_a_replan_with_the_very_same_plan_stops_as_repeated_work(make_rig: RigFactory) -> None:
    # The same plan again would also be invalid (its ids are taken by finished tasks), but it is
    # stopped as the repeat it is, without spending a repair call on it.
    rig = make_rig(plan=plan_text([task("a")]), joiner=replan(), meta=meta_config(caps={"max_replans": 5}))
    answer = rig.ask()
    _check_bounded(rig, answer)
    assert (answer.finish_reason, answer.cutover["stop_reason"]) == ("length", "repeated_work")
    assert [c["role"] for c in answer.trace["calls"]] == ["plan", "join", "plan", "final"]
    assert "plan repeats work that already ran" in answer.trace["notes"]
    assert len(rig.requests(CHEAP_M)) == 1


def test_an_invalid_replan_gets_one_repair_then_ends_the_run(make_rig: RigFactory) -> None:
    # New work, but depending on a task that does not exist: invalid, repaired once, still invalid.
    bad = plan_text([task("b", instruction="Check the figures again.", deps=["nope"])])
    rig = make_rig(plan=plan_text([task("a")]), joiner=replan(), planner_settings=ONCE,
                   more_planners=[(bad, {})], meta=meta_config(caps={"max_replans": 5}))
    answer = rig.ask()
    _check_bounded(rig, answer)
    assert (answer.finish_reason, answer.cutover["stop_reason"]) == ("length", "replan_invalid")
    assert [c["role"] for c in answer.trace["calls"]] == ["plan", "join", "plan", "repair", "final"]
    assert len(rig.requests(CHEAP_M)) == 1


# Hanging upstreams and the deadline -----------------------------------------------------------------

DEADLINE_S = 2.0
HANG = {"error_rate": 1.0, "error_kinds": {"timeout": 1.0}, "hang_s": 30}


@pytest.mark.parametrize("hang", [HANG, {"first_token_ms": 30_000}], ids=["silent", "slow-first-token"])
def test_a_hanging_executor_ends_the_run_at_the_deadline(make_rig: RigFactory, hang: dict[str, Any]) -> None:
    tasks = [task("fast", tier="strong"), task("slow"), task("after", ["slow"]), task("other", ["fast"])]
    rig = make_rig(plan=plan_text(tasks), cheap_settings=hang, meta=meta_config(caps={"deadline_s": DEADLINE_S}))
    answer = rig.ask()
    _check_bounded(rig, answer, deadline_s=DEADLINE_S, abandoned=CHEAP_M)
    assert answer.seconds > DEADLINE_S - 0.5
    assert (answer.finish_reason, answer.cutover["stop_reason"]) == ("length", "deadline")
    statuses = {t["id"]: t["status"] for t in answer.trace["tasks"]}
    assert statuses == {"fast": "ok", "slow": "cancelled", "after": "skipped", "other": "cancelled"}
    # No joiner call after the deadline: the answer lists the partial results.
    assert rig.requests(JOINER_M) == []
    assert answer.content.startswith("The run stopped early (deadline)")
    assert '<<<result id="fast" status="ok">>>' in answer.content


@pytest.mark.parametrize("role", ["planner", "joiner"])
def test_a_hanging_planner_or_joiner_ends_the_run_at_the_deadline(make_rig: RigFactory, role: str) -> None:
    settings = {f"{role}_settings": HANG}
    rig = make_rig(plan=plan_text([task("a")]), meta=meta_config(caps={"deadline_s": DEADLINE_S}), **settings)
    answer = rig.ask()
    _check_bounded(rig, answer, deadline_s=DEADLINE_S)
    assert answer.seconds > DEADLINE_S - 0.5
    assert (answer.finish_reason, answer.cutover["stop_reason"]) == ("length", "deadline")
    assert answer.content.startswith("The run stopped early (deadline)")


def test_a_task_timeout_fails_the_task_and_the_run_goes_on(make_rig: RigFactory) -> None:
    tasks = [task("slow", tier="strong"), task("a"), task("b", ["slow"])]
    rig = make_rig(plan=plan_text(tasks), strong_settings={"first_token_ms": 30_000},
                   meta=meta_config(task_timeout_s=0.3, task_retries=1))
    answer = rig.ask()
    _check_bounded(rig, answer, abandoned=STRONG_M)
    assert len(rig.requests(STRONG_M)) == 2
    assert answer.content == JOINER_ANSWER
    traced = answer.tasks()
    assert (traced["slow"]["status"], traced["slow"]["attempts"]) == ("failed", 2)
    assert "timed out" in traced["slow"]["error"]
    assert traced["b"]["status"] == "skipped" and traced["a"]["status"] == "ok"
    assert answer.seconds < 5


# Caps --------------------------------------------------------------------------------------------------


def test_max_llm_calls_stops_the_run(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text([task(f"p{i}") for i in range(8)]), meta=meta_config(caps={"max_llm_calls": 4}))
    answer = rig.ask()
    _check_bounded(rig, answer, max_calls=4)
    assert (answer.finish_reason, answer.cutover["stop_reason"]) == ("length", "max_llm_calls")
    assert len(rig.all_requests()) == 4  # the planner and three tasks; no joiner call was left
    statuses = [t["status"] for t in answer.trace["tasks"]]
    assert statuses.count("ok") == 3 and statuses.count("skipped") == 5
    assert "final call not made: max_llm_calls" in answer.trace["notes"]
    assert answer.trace["budget_left"]["llm_calls"] == 0


@pytest.mark.parametrize("concurrency", [1, 5])
def test_max_total_tokens_stops_the_run_within_the_cap(make_rig: RigFactory, concurrency: int) -> None:
    cap = 2500
    rig = make_rig(plan=plan_text([task(f"p{i}", max_tokens=300) for i in range(8)]),
                   cheap_settings={"output_tokens": 250},
                   meta=meta_config(concurrency=concurrency, caps={"max_total_tokens": cap}))
    answer = rig.ask()
    _check_bounded(rig, answer)
    assert (answer.finish_reason, answer.cutover["stop_reason"]) == ("length", "max_total_tokens")
    assert answer.completion.usage is not None
    assert answer.completion.usage.total_tokens <= cap
    statuses = [t["status"] for t in answer.trace["tasks"]]
    assert 1 <= statuses.count("ok") < 8 and "skipped" in statuses


def test_a_final_answer_near_the_token_cap_is_bounded_by_what_is_left(make_rig: RigFactory) -> None:
    # The joiner says replan and re-planning is not allowed: the answer is written by one more
    # call, whose completion may only use what is left of the cap.
    cap = 1200
    rig = make_rig(plan=plan_text([task("a")]), joiner=replan(" ".join(["more"] * 200)),
                   meta=meta_config(caps={"max_total_tokens": cap, "max_replans": 0}))
    answer = rig.ask()
    _check_bounded(rig, answer)
    assert answer.completion.usage is not None
    assert answer.completion.usage.total_tokens <= cap
    for record in rig.requests(PLANNER_M) + rig.requests(JOINER_M):
        assert 0 < record.body["max_tokens"] < cap


def test_a_final_answer_near_the_dollar_cap_may_only_write_what_is_left(make_rig: RigFactory) -> None:
    plan = plan_text([task("a")])
    # First a run with room to spare, for what planning, the task and the joiner's prompt cost here.
    roomy = make_rig(plan=plan)
    first = roomy.ask()
    joins = [c for c in first.trace["calls"] if c["role"] == "join"]
    assert len(joins) == 1
    spent_before_join = first.cost - Decimal(joins[0]["cost_usd"])
    prompt_bytes = sum(8 + len(json.dumps(m)) for m in roomy.requests(JOINER_M)[0].body["messages"])
    price = PRICES[JOINER_M]
    # Then a cap that leaves the joiner's prompt (at one token per byte of its JSON, doubled for
    # slack) and about 150 completion tokens.
    cap = spent_before_join + (2 * prompt_bytes * Decimal(price["input"]) + 150 * Decimal(price["output"])) / 1_000_000
    tight = make_rig(plan=plan, meta=meta_config(caps={"max_cost_usd": str(cap.quantize(Decimal("0.000001")))}))
    answer = tight.ask()
    _check_bounded(tight, answer)
    joined = tight.requests(JOINER_M)
    # Far below max_task_tokens (4096), the roomy run's limit: the dollars left set it.
    assert roomy.requests(JOINER_M)[0].body["max_tokens"] == 4096
    assert len(joined) == 1 and 0 < joined[0].body["max_tokens"] < 1000
    assert answer.cost <= cap


@pytest.mark.parametrize("concurrency", [1, 3])
def test_max_cost_usd_stops_the_run(make_rig: RigFactory, concurrency: int) -> None:
    # About $0.0022 a task after ~$0.009 of planning, each held at up to ~$0.0045 while it runs (the planner's
    # reply must fit in what the cap leaves after its prompt).
    cap = Decimal("0.022")
    rig = make_rig(plan=plan_text([task(f"p{i}", tier="strong", max_tokens=300) for i in range(12)]),
                   strong_settings={"output_tokens": 250},
                   meta=meta_config(concurrency=concurrency, caps={"max_cost_usd": str(cap)}))
    answer = rig.ask()
    _check_bounded(rig, answer)
    assert (answer.finish_reason, answer.cutover["stop_reason"]) == ("length", "max_cost_usd")
    assert "final call not made: max_cost_usd" in answer.trace["notes"]
    traced = answer.trace["tasks"]
    assert any(t["status"] == "skipped" for t in traced)
    # Every call is held at its worst case while it runs (prompt bytes, max_tokens, the dearest
    # target), so however many run at once the run never spends past the cap...
    assert answer.cost <= cap
    # ...and it stops only when the next task's worst case no longer fits: $8 per M for 300
    # completion tokens, $2 per M for at most one token per prompt byte (the messages' JSON,
    # doubled for slack, bounds the bytes the gateway counts).
    price = PRICES[STRONG_M]
    prompt_bytes = max(len(json.dumps(r.body["messages"])) for r in rig.requests(STRONG_M))
    worst = (300 * Decimal(price["output"]) + 2 * prompt_bytes * Decimal(price["input"])) / 1_000_000
    assert cap - answer.cost < worst
    assert len(rig.requests(STRONG_M)) >= 4
