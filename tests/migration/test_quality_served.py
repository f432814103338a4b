"""Quality gates through a real gateway on simulated upstreams: the cheap checks roll back a candidate
that breaks what the request asked for, in every dialect; the judge's spend cap holds under load."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest

from tests.gateway.helpers import metric, route, sdk
from tests.migration.conftest import StackFactory
from tests.migration.support import ALIAS, MIGRATION_ID, Traffic, fast_plan, migration_spec
from tests.support import wait_for

NOT_JSON = "Sure! Here is what you asked for, in plain words rather than JSON."


class ResponsesTraffic:
    """Responses API requests asking for JSON, from a background thread, until stopped."""

    def __init__(self, stack: Any) -> None:
        self._stack = stack
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.sent = 0

    def _run(self) -> None:
        client = sdk(self._stack.gw, timeout=30.0)
        while not self._stop.is_set():
            client.responses.create(model=ALIAS, input=f"Give me a JSON object {self.sent}",
                                    text={"format": {"type": "json_object"}}, user=f"r{self.sent}")
            self.sent += 1

    def __enter__(self) -> ResponsesTraffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.mark.parametrize("dialect", ["chat", "responses"])
def test_a_candidate_that_breaks_json_is_rolled_back_by_the_json_check(make_stack: StackFactory, dialect: str) -> None:
    stack = make_stack(
        # Shadowing only: the pairs are the evidence; the error, latency and cost gates have nothing against it.
        migrations=[migration_spec(plan=fast_plan(shadow_percent=100.0, min_step_s=600.0, max_step_s=1200.0))],
        candidate={"replies": {"new": NOT_JSON}},
    )
    if dialect == "chat":
        with Traffic(stack.gw, workers=4, response_format={"type": "json_object"}):
            stack.wait_for("rolled_back", timeout=30)
    else:
        with ResponsesTraffic(stack):
            stack.wait_for("rolled_back", timeout=30)
    rollback = stack.transitions()[-1]
    failed = [g for g in rollback["verdict"]["gates"] if g["result"] == "fail"]
    assert failed[0]["gate"] == "quality_json", [g["gate"] for g in failed]
    inputs = failed[0]["inputs"]
    assert inputs["worse"] == inputs["n"] >= 30 and inputs["better"] == 0
    assert inputs["invalid_baseline"] == 0 and inputs["invalid_candidate"] >= inputs["n"]
    text = stack.metrics()
    assert metric(text, "cutover_migration_rollbacks_total", migration=MIGRATION_ID, reason="quality_json") == 1
    assert metric(text, "cutover_migration_quality_checks_total", migration=MIGRATION_ID, arm="candidate",
                  check="json_invalid") >= 30
    assert metric(text, "cutover_migration_quality_checks_total", migration=MIGRATION_ID, arm="baseline",
                  check="json_invalid") == 0


def test_a_healthy_candidate_passes_the_json_check(make_stack: StackFactory) -> None:
    stack = make_stack(migrations=[migration_spec(plan=fast_plan(shadow_percent=100.0, weights=[100]))])
    with Traffic(stack.gw, workers=4, response_format={"type": "json_object"}):
        stack.wait_for("canary", step=0, timeout=30)
    shadow_pass = [t for t in stack.transitions() if t["from_phase"] == "shadow"][-1]
    gate = next(g for g in shadow_pass["verdict"]["gates"] if g["gate"] == "quality_json" and g["scope"] == "step")
    assert gate["inputs"]["n"] >= 20 and gate["inputs"]["worse"] == 0 and gate["result"] in ("pass", "skipped")


def test_the_judges_hourly_spend_cap_holds_under_load(make_stack: StackFactory) -> None:
    cap = 2.0
    stack = make_stack(
        migrations=[migration_spec(
            plan=fast_plan(shadow_percent=100.0, min_step_s=600.0, max_step_s=1200.0),
            gates={"quality": {"judge": "judge", "sample": 1.0, "max_usd_per_hour": cap, "max_concurrency": 8,
                               "noise_share": 0.0}},
        )],
        baseline={"replies": {"judge-m": '{"winner": "tie", "reason": "the same"}'}},
        models={ALIAS: route(("legacy", "old")), "judge": route(("legacy", "judge-m"))},
        # A dear judge: a few pairs use up the hour.
        prices={"judge-m": {"input": 500, "output": 500}},
    )
    with Traffic(stack.gw, workers=8):
        wait_for(lambda: metric(stack.metrics(), "cutover_judge_dropped_total", migration=MIGRATION_ID,
                                reason="budget") >= 20, timeout=30, what="pairs dropped at the cap")
    text = stack.metrics()
    spent = metric(text, "cutover_judge_cost_usd_total", migration=MIGRATION_ID)
    judged = metric(text, "cutover_judge_pairs_total", migration=MIGRATION_ID, result="tie")
    assert 0 < spent <= cap, spent
    assert judged >= 2
    # The judge's calls went through the gateway like any client's, priced there.
    assert Decimal(str(spent)) <= Decimal(str(cap))
    window = stack.live.local_window(MIGRATION_ID)
    assert window is not None and window.candidate.quality.judged == judged and window.candidate.quality.ties == judged


def judged_stack(make_stack: StackFactory, candidate: dict[str, Any], plan: dict[str, Any]) -> Any:
    """A migration whose pairs all go to a scripted judge (simulator.judge), served on the baseline's simulator."""
    return make_stack(
        migrations=[migration_spec(plan=plan, gates={"quality": {
            "judge": "judge", "sample": 1.0, "max_concurrency": 8, "noise_share": 0.3, "min_judged": 30,
            "canary_pair_share": 0.5}})],
        # Answers of 24 words: the off-topic reply is not also judged for being much longer than the other.
        baseline={"judge": {}, "output_tokens": 24},
        candidate={"output_tokens": 24, **candidate},
        models={ALIAS: route(("legacy", "old")), "judge": route(("legacy", "judge-m"))},
    )


def test_a_candidate_the_judge_finds_worse_is_rolled_back(make_stack: StackFactory) -> None:
    stack = judged_stack(make_stack, {"quality": {"off_topic": 1.0}},
                         fast_plan(shadow_percent=100.0, min_step_s=600.0, max_step_s=1200.0))
    with Traffic(stack.gw, workers=6):
        stack.wait_for("rolled_back", timeout=40)
    rollback = stack.transitions()[-1]
    failed = [g for g in rollback["verdict"]["gates"] if g["result"] == "fail"]
    assert failed[0]["gate"] == "quality_win_rate", [g["gate"] for g in failed]
    inputs = failed[0]["inputs"]
    assert inputs["judged"] >= 30 and inputs["losses"] > inputs["wins"]
    assert metric(stack.metrics(), "cutover_migration_rollbacks_total", migration=MIGRATION_ID,
                  reason="quality_win_rate") == 1


def test_an_equivalent_candidate_is_promoted_with_the_judge_watching(make_stack: StackFactory) -> None:
    stack = judged_stack(make_stack, {}, fast_plan(shadow_percent=100.0, weights=[100], safety_window_s=0.5))
    with Traffic(stack.gw, workers=6):
        stack.wait_for("promoted", timeout=60)
    passed = [t for t in stack.transitions() if t["from_phase"] == "shadow"][-1]
    gate = next(g for g in passed["verdict"]["gates"] if g["gate"] == "quality_win_rate" and g["scope"] == "step")
    assert gate["result"] == "pass"
    assert gate["inputs"]["judged"] >= 30 and gate["inputs"]["noise_pairs"] >= 10
    assert gate["inputs"]["wins"] == gate["inputs"]["losses"] == 0  # equal answers: ties
