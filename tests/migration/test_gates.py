"""Gates: each gate's pass / fail / inconclusive from its anytime-valid test, on the step and on its recent
block; attempts against client-visible outcomes; the minimums for advancing; the critical guard; records."""

from __future__ import annotations

import json
import random

import pytest

from config.migration import GateThresholds, StepPlan
from migration.gates import Verdict, decide, evaluate, judge
from migration.sequential import block_alpha
from migration.window import ArmWindow, Sample, StepWindow, relative_delta_ppm
from migration.window import merge as merge_arms

PLAN = StepPlan(min_step_s=300, max_step_s=3000, min_samples=200)
GATES = GateThresholds()
LATER = 400.0


def arm(
    ok: int,
    errors: int = 0,
    *,
    latency: float = 300.0,
    slow: int = 0,
    slow_ms: float = 1500.0,
    ttft: float | None = None,
    cost: int | None = 1000,
    rate_limited: int = 0,
    retried_errors: int = 0,
) -> ArmWindow:
    """`ok` successes, of which `slow` take `slow_ms`; then errors and 429s. Each request took one upstream
    attempt, and `retried_errors` of the successes needed a second one after a failed first."""
    items = [Sample("ok", slow_ms if i < slow else latency, ttft, cost) for i in range(ok)]
    items += [Sample("error")] * errors + [Sample("rate_limited")] * rate_limited
    attempts = [s.kind for s in items] + ["error"] * retried_errors
    return ArmWindow.of(items, attempts=attempts)  # type: ignore[arg-type]


def verdict_of(candidate: ArmWindow, baseline: ArmWindow | None = None, now: float = LATER) -> Verdict:
    return evaluate(StepWindow(0.0, baseline or arm(400), candidate), GATES, PLAN, now)


# Minimums and the critical guard ----------------------------------------------------


def test_too_few_samples_holds_the_step_and_says_what_is_missing() -> None:
    verdict = evaluate(StepWindow(0.0, arm(400), arm(57)), GATES, PLAN, 40.0)
    assert (verdict.result, verdict.critical) == ("inconclusive", False)
    assert verdict.reason == "candidate has 57/200 samples; step held 40 s of 300 s"


def test_the_baseline_needs_no_minimum_to_advance() -> None:
    # The error and latency gates judge the candidate alone, and cost is paired on the prompts copied to the
    # baseline: the 100 % step's baseline is a thin shadow share.
    verdict = verdict_of(with_pairs(arm(2500), [0.9] * 250), baseline=arm(12))
    assert (verdict.result, verdict.reason) == ("pass", "all gates pass")


def test_a_mean_of_fewer_than_min_samples_values_is_not_judged() -> None:
    # The confidence sequence for a mean is asymptotic: 57 pairs 20 % dearer prove nothing yet.
    figures = verdict_of(with_pairs(arm(400), [1.2] * 57)).gate("cost")
    assert (figures.result, figures.estimate) == ("inconclusive", pytest.approx(0.2))


def test_clear_evidence_fails_at_once_whatever_the_minimums() -> None:
    # 8 errors in 50 attempts is far over 2 %: a test valid at every look may say so at once.
    verdict = evaluate(StepWindow(0.0, arm(400), arm(42, 8)), GATES, PLAN, 5.0)
    assert (verdict.result, verdict.critical) == ("fail", False)
    assert verdict.gate("error_rate").result == "fail"


def test_critical_guard_fails_at_once_regardless_of_minimums() -> None:
    verdict = evaluate(StepWindow(0.0, arm(3), arm(10, 10)), GATES, PLAN, 5.0)
    assert (verdict.result, verdict.critical) == ("fail", True)
    assert verdict.reason.startswith("critical (step): 10/20 attempts failed")


@pytest.mark.parametrize(("ok", "errors", "result"), [(11, 9, "pass"), (9, 10, "skipped")])
def test_critical_guard_needs_the_ratio_and_the_attempts(ok: int, errors: int, result: str) -> None:
    verdict = evaluate(StepWindow(0.0, arm(3), arm(ok, errors)), GATES, PLAN, 5.0)
    assert not verdict.critical
    assert verdict.gate("critical_error_ratio").result == result


def test_a_healthy_candidate_with_enough_evidence_passes() -> None:
    verdict = verdict_of(arm(2490, 10, ttft=150.0))
    assert (verdict.result, verdict.reason) == ("pass", "all gates pass")
    assert [g.result for g in verdict.gates] == ["pass"] * 5 + ["skipped"] * 2  # no compared pairs: no quality


def test_a_healthy_candidate_without_enough_evidence_holds() -> None:
    # 1 % errors over 400 attempts looks fine, but does not yet show "under 2 %" at alpha 0.005.
    verdict = verdict_of(arm(396, 4))
    assert verdict.result == "inconclusive"
    assert verdict.gate("error_rate").result == "inconclusive"


# Error rate ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ok", "errors", "result"),
    [(2980, 20, "pass"), (2940, 60, "inconclusive"), (2880, 120, "fail"), (370, 30, "fail"), (380, 20, "inconclusive")],
)
def test_error_rate(ok: int, errors: int, result: str) -> None:
    figures = verdict_of(arm(ok, errors)).gate("error_rate")
    assert figures.result == result
    assert figures.estimate == errors / (ok + errors)
    assert dict(figures.inputs) == {"test": "proportion", "n": ok + errors, "k_fail": errors, "k_pass": errors}


def test_the_error_gate_counts_every_attempt_not_what_clients_saw() -> None:
    # Retries hid 150 failed attempts from the clients: they saw 0 % errors, the upstream failed 3 %.
    candidate = arm(4850, retried_errors=150)
    figures = verdict_of(candidate).gate("error_rate")
    assert (candidate.errors, candidate.attempts, candidate.attempt_errors) == (0, 5000, 150)
    assert figures.result == "fail"
    assert figures.beside == 0.0
    assert "150/5000 upstream attempts failed (3.00%); clients saw 0/4850 (0.00%)" in figures.note


def test_rate_limits_are_counted_apart() -> None:
    verdict = verdict_of(arm(3000, rate_limited=1500))
    assert verdict.result == "pass"
    assert verdict.requests_candidate == 3000
    assert "429s apart: 1500 attempts, 1500 requests" in verdict.gate("error_rate").note


# Latency and TTFT ------------------------------------------------------------------


@pytest.mark.parametrize(("ok", "slow", "result"), [(1000, 1, "pass"), (400, 5, "inconclusive"), (400, 25, "fail")])
def test_latency_p99(ok: int, slow: int, result: str) -> None:
    figures = verdict_of(arm(ok, slow=slow)).gate("latency_p99")
    assert figures.result == result
    assert figures.threshold == pytest.approx(0.01)
    assert (figures.inputs["n"], figures.inputs["k_fail"], figures.inputs["k_pass"]) == (ok, slow, slow)


def test_a_latency_in_the_thresholds_bucket_counts_against_failing_and_passing() -> None:
    # 800 ms sits inside one 5 % bucket (about 800-840 ms): an answer in it may be faster or slower.
    figures = verdict_of(arm(400, slow=30, slow_ms=810.0)).gate("latency_p99")
    assert (figures.inputs["k_fail"], figures.inputs["k_pass"]) == (0, 30)
    assert figures.result == "inconclusive"


def test_ttft_skipped_without_streams() -> None:
    figures = verdict_of(arm(400)).gate("ttft_p99")
    assert (figures.result, figures.inputs["n"]) == ("skipped", 0)


def test_few_ttft_samples_fail_only_on_clear_evidence() -> None:
    candidate = merge_arms(arm(300), arm(40, ttft=150.0))
    assert verdict_of(candidate).gate("ttft_p99").result == "skipped"
    slow_streams = merge_arms(arm(300), arm(40, ttft=2000.0))
    verdict = verdict_of(slow_streams)
    assert verdict.gate("ttft_p99").result == "fail"
    assert verdict.result == "fail"


def test_ttft_with_enough_samples() -> None:
    assert verdict_of(arm(400, ttft=1200.0)).gate("ttft_p99").result == "fail"
    assert verdict_of(arm(1000, ttft=500.0)).gate("ttft_p99").result == "pass"


# Cost ------------------------------------------------------------------------------


def noisy_costs(mean: int, n: int, seed: int = 1) -> ArmWindow:
    # The same seed gives both arms the same noise, scaled: the ratio of means is exact.
    rng = random.Random(seed)
    items = [Sample("ok", 300.0, None, max(1, int(rng.gauss(mean, mean * 0.3)))) for _ in range(n)]
    return ArmWindow.of(items, attempts=["ok"] * n)


@pytest.mark.parametrize(("candidate_mean", "result"), [(900, "pass"), (1000, "pass"), (1400, "fail")])
def test_cost_against_the_baseline_arm_mean(candidate_mean: int, result: str) -> None:
    figures = verdict_of(noisy_costs(candidate_mean, 5000), baseline=noisy_costs(1000, 5000)).gate("cost")
    assert figures.result == result


def test_cost_slightly_above_but_noisy_is_inconclusive() -> None:
    figures = verdict_of(noisy_costs(1080, 400), baseline=noisy_costs(1000, 400)).gate("cost")
    assert figures.estimate is not None and figures.estimate > GATES.cost_increase
    assert figures.result == "inconclusive"


def with_pairs(candidate: ArmWindow, ratios: list[float]) -> ArmWindow:
    deltas = [relative_delta_ppm(round(1000 * r), 1000) for r in ratios]
    return merge_arms(candidate, ArmWindow.of([], [d for d in deltas if d is not None]))


def test_shadow_cost_is_compared_pair_by_pair() -> None:
    # Arm means say "same", but on identical prompts the candidate costs 20 % more.
    rng = random.Random(5)
    paired = with_pairs(arm(400), [1.2 + rng.uniform(-0.05, 0.05) for _ in range(300)])
    figures = verdict_of(paired).gate("cost")
    assert figures.result == "fail" and figures.inputs["test"] == "mean"
    assert figures.estimate == pytest.approx(0.2, abs=0.01)
    cheap = with_pairs(arm(400), [0.9 + rng.uniform(-0.05, 0.05) for _ in range(300)])
    assert verdict_of(cheap).gate("cost").result == "pass"


def test_cost_skipped_without_prices() -> None:
    assert verdict_of(arm(400, cost=None)).gate("cost").result == "skipped"
    assert verdict_of(arm(400), baseline=arm(400, cost=0)).gate("cost").result == "skipped"


# The recent block --------------------------------------------------------------------


def test_a_regression_late_in_a_step_fails_on_its_block_while_the_step_looks_fine() -> None:
    before = arm(6000, 60)  # an hour at 1 %
    after = arm(180, 20)  # the last minutes at 10 %
    step = StepWindow(0.0, arm(400), merge_arms(before, after))
    block = StepWindow(0.0, arm(40), after)
    verdict = evaluate(step, GATES, PLAN, 3600.0, block, 6, 3000.0)
    assert verdict.gate("error_rate").result != "fail"
    assert verdict.gate("error_rate", "block").result == "fail"
    assert verdict.gate("error_rate", "block").alpha == pytest.approx(block_alpha(GATES.alpha, 6))
    assert (verdict.result, verdict.block, verdict.block_started_at) == ("fail", 6, 3000.0)
    assert "error_rate (block)" in verdict.reason


def test_a_block_never_passes_a_step_on_its_own() -> None:
    step = StepWindow(0.0, arm(400), arm(400, 4))
    block = StepWindow(0.0, arm(40), arm(3000))
    verdict = evaluate(step, GATES, PLAN, LATER, block, 2, 300.0)
    assert verdict.gate("error_rate", "block").result == "pass"
    assert verdict.result == "inconclusive"


# Records ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "candidate",
    [arm(2490, 10, ttft=150.0), arm(380, 20), arm(57), arm(10, 10), with_pairs(arm(400), [1.0] * 57),
     noisy_costs(1400, 400)],
)
def test_verdict_is_json_and_recomputable_from_its_record(candidate: ArmWindow) -> None:
    block = StepWindow(0.0, arm(10), arm(40, 1))
    verdict = evaluate(StepWindow(0.0, arm(400), candidate), GATES, PLAN, LATER, block, 3, 200.0)
    stored = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    again = Verdict.from_dict(stored)
    assert again == verdict
    for gate in again.gates:
        assert judge(gate.inputs["test"], gate.inputs, gate.threshold, gate.alpha) == (gate.result, gate.estimate)
    assert decide(
        again.gates, requests_candidate=again.requests_candidate, held_s=again.held_s,
        min_samples=again.min_samples, min_step_s=again.min_step_s,
    ) == (verdict.result, verdict.critical, verdict.reason)
