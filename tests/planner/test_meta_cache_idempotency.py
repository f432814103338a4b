"""The plan cache for templated goals, and idempotent runs keyed by the client's Idempotency-Key."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from simulator import SimulationSettings
from tests.gateway.helpers import metric, scrape
from tests.planner.conftest import (
    CHEAP_M,
    JOINER_ANSWER,
    JOINER_M,
    META,
    PLANNER_M,
    STRONG_M,
    Answer,
    Rig,
    RigFactory,
    always_failing,
    executor_request_for,
    meta_config,
    plan_text,
    replan,
    task,
    user_text,
)

TEMPLATE = ("Order {} was delivered late to customer {}. Draft an apology, compute a refund of {} euros, and "
            "write a short internal note explaining what went wrong and how to prevent it next time.")
TASKS = [task("apology"), task("refund", tier="strong"), task("note", ["apology", "refund"])]
CACHED = meta_config(cache={"enabled": True})


def _cache_count(rig: Rig, result: str) -> float:
    return metric(scrape(rig.gw.root_url), "cutover_pe_plan_cache_total", meta_model=META, result=result)


def test_the_same_template_with_other_values_reuses_the_plan(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text(TASKS), meta=CACHED)
    first = rig.ask(TEMPLATE.format(1001, "C-7781", 40))
    assert first.trace["plan_cache_hit"] is False
    assert len(rig.requests(PLANNER_M)) == 1
    assert (_cache_count(rig, "miss"), _cache_count(rig, "hit")) == (1, 0)

    second = rig.ask(TEMPLATE.format(20017, "C-12", 15.5))
    assert second.content == JOINER_ANSWER
    assert second.finish_reason == "stop"
    assert len(rig.requests(PLANNER_M)) == 1  # no new planner request
    assert second.trace["plan_cache_hit"] is True
    assert "plan taken from the plan cache; planner skipped" in second.trace["notes"]
    assert [c["role"] for c in second.trace["calls"]] == ["join"]
    assert second.trace["plans"] == first.trace["plans"]
    assert (_cache_count(rig, "miss"), _cache_count(rig, "hit")) == (1, 1)
    # The cached plan's tasks ran again, for the new request's values.
    apologies = executor_request_for(rig, "Do step apology of the report.")
    assert len(apologies) == 2 and "20017" in user_text(apologies[1]) and "1001" not in user_text(apologies[1])
    # Usage and cost cover only what this run did.
    assert second.completion.usage is not None and first.completion.usage is not None
    assert second.completion.usage.total_tokens < first.completion.usage.total_tokens
    assert second.cost < first.cost

    # Another goal is planned afresh.
    rig.ask("Summarise the attached meeting notes into action items, with an owner and a due date for each "
            "item, and flag anything that is blocked or needs a decision from management.")
    assert len(rig.requests(PLANNER_M)) == 2
    assert _cache_count(rig, "miss") == 2


def test_a_cached_plan_whose_task_fails_is_invalidated(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text(TASKS), meta=CACHED)
    rig.ask(TEMPLATE.format(1, "A-1", 10))
    assert len(rig.requests(PLANNER_M)) == 1

    rig.strong.set_settings(SimulationSettings(**always_failing()))
    failing = rig.ask(TEMPLATE.format(2, "A-2", 20))
    assert failing.trace["plan_cache_hit"] is True
    assert len(rig.requests(PLANNER_M)) == 1
    assert {t["id"]: t["status"] for t in failing.trace["tasks"]} == {
        "apology": "ok", "refund": "failed", "note": "skipped"}

    rig.strong.set_settings(SimulationSettings(output_tokens=12))
    again = rig.ask(TEMPLATE.format(3, "A-3", 30))
    assert again.trace["plan_cache_hit"] is False
    assert len(rig.requests(PLANNER_M)) == 2  # the planner is asked again
    assert {t["status"] for t in again.trace["tasks"]} == {"ok"}
    # ... and its plan is cached once more.
    rig.ask(TEMPLATE.format(4, "A-4", 40))
    assert len(rig.requests(PLANNER_M)) == 2
    assert (_cache_count(rig, "miss"), _cache_count(rig, "hit")) == (2, 2)


def test_a_run_stopped_by_a_cap_does_not_cache_its_plan(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text(TASKS), joiner=replan(),
                   meta=meta_config(cache={"enabled": True}, caps={"max_replans": 0}))
    stopped = rig.ask(TEMPLATE.format(1, "A-1", 10))
    assert stopped.cutover["stop_reason"] == "max_replans"
    rig.ask(TEMPLATE.format(2, "A-2", 20))
    assert len(rig.requests(PLANNER_M)) == 2


def test_cache_disabled_plans_every_time(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text(TASKS))
    rig.ask(TEMPLATE.format(1, "A-1", 10))
    second = rig.ask(TEMPLATE.format(2, "A-2", 20))
    assert second.trace["plan_cache_hit"] is None
    assert len(rig.requests(PLANNER_M)) == 2
    assert _cache_count(rig, "hit") == _cache_count(rig, "miss") == 0


# Idempotency ----------------------------------------------------------------------------------------


def _counts(rig: Rig) -> dict[str, int]:
    return {model: len(rig.requests(model)) for model in rig.sims}


def _same_answer(a: Answer, b: Answer) -> None:
    assert a.completion.id == b.completion.id
    assert a.content == b.content == JOINER_ANSWER
    assert a.completion.usage == b.completion.usage
    assert a.cost == b.cost


def test_concurrent_requests_with_one_key_share_one_run(make_rig: RigFactory) -> None:
    # Slow executors keep the first run going while the second request arrives.
    rig = make_rig(plan=plan_text(TASKS), cheap_settings={"first_token_ms": 300})
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(rig.ask, key="k1") for _ in range(2)]
        first, second = (f.result(timeout=30) for f in futures)
    _same_answer(first, second)
    # Both waited for the one run (two waves of 300 ms tasks): neither got an answer stored earlier.
    assert min(first.seconds, second.seconds) > 0.3
    assert _counts(rig) == {PLANNER_M: 1, JOINER_M: 1, CHEAP_M: 2, STRONG_M: 1}


def test_a_retry_with_the_same_key_gets_the_stored_answer_without_upstream_calls(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text(TASKS))
    first = rig.ask(key="k1")
    before = _counts(rig)
    retry = rig.ask(key="k1")
    _same_answer(first, retry)
    assert _counts(rig) == before
    # The trace option applies per request, to the stored run.
    untraced = rig.ask(key="k1", trace=False)
    assert "trace" not in untraced.cutover and untraced.completion.id == first.completion.id
    # A stream with the key replays the stored answer too.
    chunks = list(rig.client.chat.completions.create(
        model=META, messages=[{"role": "user", "content": "anything"}], stream=True,
        extra_headers={"Idempotency-Key": "k1"}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == JOINER_ANSWER
    assert _counts(rig) == before


def test_different_keys_and_no_key_run_separately(make_rig: RigFactory) -> None:
    rig = make_rig(plan=plan_text(TASKS))
    one = rig.ask(key="k1")
    two = rig.ask(key="k2")
    assert one.completion.id != two.completion.id
    assert len(rig.requests(PLANNER_M)) == 2
    rig.ask()
    rig.ask()
    assert len(rig.requests(PLANNER_M)) == 4
    assert len(rig.requests(JOINER_M)) == 4
