"""Gates: Wilson bounds, each gate's pass/fail/inconclusive, sample minimums, the critical guard."""

from __future__ import annotations

import json
import math
import random

import pytest

from config.migration import GateThresholds, StepPlan
from migration.gates import Verdict, decide, evaluate, quantile_lower_bound, wilson_bounds
from migration.window import ArmWindow, Histogram, Sample, StepWindow, relative_delta_ppm
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
) -> ArmWindow:
    """`ok` successes, of which `slow` take `slow_ms`; then errors and 429s."""
    items = [Sample("ok", slow_ms if i < slow else latency, ttft, cost) for i in range(ok)]
    items += [Sample("error")] * errors + [Sample("rate_limited")] * rate_limited
    return ArmWindow.of(items)


def judge(candidate: ArmWindow, baseline: ArmWindow | None = None, now: float = LATER) -> Verdict:
    return evaluate(StepWindow(0.0, baseline or arm(400), candidate), GATES, PLAN, now)


# Wilson ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("errors", "n", "lower", "upper"),
    [(1, 10, 0.0179, 0.4042), (5, 10, 0.2366, 0.7634), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0)],
)
def test_wilson_known_values_at_95(errors: int, n: int, lower: float, upper: float) -> None:
    assert wilson_bounds(errors, n, 1.96) == pytest.approx((lower, upper), abs=1e-4)


def test_wilson_bounds_solve_the_score_equation() -> None:
    # The Wilson interval is where |p_hat - p| = z * sqrt(p (1 - p) / n).
    rng = random.Random(3)
    for _ in range(200):
        n = rng.randrange(1, 5000)
        errors, z = rng.randrange(1, n + 1), rng.uniform(1, 3)
        p_hat = errors / n
        for p in wilson_bounds(errors, n, z):
            if 0 < p < 1:
                assert (p_hat - p) ** 2 == pytest.approx(z * z * p * (1 - p) / n, rel=1e-6, abs=1e-12)


def test_wilson_without_data_knows_nothing() -> None:
    assert wilson_bounds(0, 0, 2.576) == (0.0, 1.0)


# Minimums and the critical guard ----------------------------------------------------


def test_too_few_samples_is_inconclusive_and_says_what_is_missing() -> None:
    verdict = evaluate(StepWindow(0.0, arm(400), arm(57)), GATES, PLAN, 40.0)
    assert verdict.result == "inconclusive"
    assert not verdict.critical
    assert verdict.reason == "candidate has 57/200 samples; step held 40 s of 300 s"


def test_both_arms_need_samples() -> None:
    verdict = judge(arm(250), baseline=arm(120))
    assert (verdict.result, verdict.reason) == ("inconclusive", "baseline has 120/200 samples")


def test_no_failure_on_no_data_even_when_it_looks_bad() -> None:
    # 8 errors in 50 requests is far over 2 %, but below the sample minimum.
    verdict = judge(arm(42, 8))
    assert verdict.result == "inconclusive"
    assert verdict.gate("error_rate").result == "fail"


def test_critical_guard_fails_at_once_regardless_of_minimums() -> None:
    verdict = evaluate(StepWindow(0.0, arm(3), arm(10, 10)), GATES, PLAN, 5.0)
    assert (verdict.result, verdict.critical) == ("fail", True)
    assert verdict.reason.startswith("critical: candidate error ratio 0.500 (10/20)")


@pytest.mark.parametrize(("ok", "errors", "result"), [(11, 9, "pass"), (9, 10, "skipped")])
def test_critical_guard_needs_the_ratio_and_the_requests(ok: int, errors: int, result: str) -> None:
    verdict = evaluate(StepWindow(0.0, arm(3), arm(ok, errors)), GATES, PLAN, 5.0)
    assert not verdict.critical
    assert verdict.gate("critical_error_ratio").result == result


def test_healthy_candidate_passes() -> None:
    verdict = judge(arm(396, 4, ttft=150.0))
    assert (verdict.result, verdict.reason) == ("pass", "all gates pass")
    assert [g.result for g in verdict.gates] == ["pass"] * 5


# Error rate ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ok", "errors", "result"),
    [(392, 8, "pass"), (388, 12, "inconclusive"), (380, 20, "fail")],
)
def test_error_rate_judged_by_the_lower_bound(ok: int, errors: int, result: str) -> None:
    figures = judge(arm(ok, errors)).gate("error_rate")
    assert figures.result == result
    assert figures.bound == pytest.approx(wilson_bounds(errors, ok + errors, GATES.wilson_z)[0])
    assert figures.estimate == errors / (ok + errors)


def test_rate_limits_are_counted_apart() -> None:
    verdict = judge(arm(300, rate_limited=150))
    assert verdict.result == "pass"
    assert verdict.requests_candidate == 300
    assert "candidate 150" in verdict.gate("error_rate").note


# Latency and TTFT ------------------------------------------------------------------


def test_quantile_lower_bound_is_below_the_estimate_and_tightens_with_data() -> None:
    rng = random.Random(9)
    small = Histogram.of(rng.lognormvariate(6, 0.5) for _ in range(300))
    large = Histogram.of(rng.lognormvariate(6, 0.5) for _ in range(30000))
    for histogram in (small, large):
        bound, estimate = quantile_lower_bound(histogram, 0.99, 2.576), histogram.quantile(0.99)
        assert bound is not None and estimate is not None
        assert bound < estimate
    true_p99 = math.exp(6 + 0.5 * 2.3263)
    assert quantile_lower_bound(small, 0.99, 2.576) < quantile_lower_bound(large, 0.99, 2.576) < true_p99
    assert quantile_lower_bound(Histogram(), 0.99, 2.576) is None


@pytest.mark.parametrize(("slow", "result"), [(1, "pass"), (5, "inconclusive"), (10, "fail"), (400, "fail")])
def test_latency_p99(slow: int, result: str) -> None:
    figures = judge(arm(400, slow=slow)).gate("latency_p99")
    assert figures.result == result
    if result == "fail":
        assert figures.bound is not None and figures.bound > GATES.p99_ms


def test_ttft_skipped_without_streams() -> None:
    figures = judge(arm(400)).gate("ttft_p99")
    assert (figures.result, figures.samples_candidate) == ("skipped", 0)


def test_few_ttft_samples_fail_only_on_clear_evidence() -> None:
    candidate = merge_arms(arm(300), arm(40, ttft=150.0))
    assert judge(candidate).gate("ttft_p99").result == "skipped"
    slow_streams = merge_arms(arm(300), arm(40, ttft=2000.0))
    verdict = judge(slow_streams)
    assert verdict.gate("ttft_p99").result == "fail"
    assert verdict.result == "fail"


def test_ttft_with_enough_samples() -> None:
    assert judge(arm(400, ttft=1200.0)).gate("ttft_p99").result == "fail"
    assert judge(arm(400, ttft=500.0)).gate("ttft_p99").result == "pass"


# Cost ------------------------------------------------------------------------------


def noisy_costs(mean: int, n: int, seed: int = 1) -> ArmWindow:
    # The same seed gives both arms the same noise, scaled: the ratio of means is exact.
    rng = random.Random(seed)
    return ArmWindow.of([Sample("ok", 300.0, None, max(1, int(rng.gauss(mean, mean * 0.3)))) for _ in range(n)])


@pytest.mark.parametrize(("candidate_mean", "result"), [(1000, "pass"), (1040, "pass"), (1400, "fail")])
def test_cost_against_the_baseline_arm_mean(candidate_mean: int, result: str) -> None:
    figures = judge(noisy_costs(candidate_mean, 400), baseline=noisy_costs(1000, 400)).gate("cost")
    assert figures.result == result


def test_cost_slightly_above_but_noisy_is_inconclusive() -> None:
    figures = judge(noisy_costs(1080, 400), baseline=noisy_costs(1000, 400)).gate("cost")
    assert figures.estimate is not None and figures.estimate > GATES.cost_increase
    assert figures.result == "inconclusive"


def with_pairs(candidate: ArmWindow, ratios: list[float]) -> ArmWindow:
    deltas = [relative_delta_ppm(round(1000 * r), 1000) for r in ratios]
    return merge_arms(candidate, ArmWindow.of([], [d for d in deltas if d is not None]))


def test_shadow_cost_is_compared_pair_by_pair() -> None:
    # Arm means say "same", but on identical prompts the candidate costs 20 % more.
    rng = random.Random(5)
    paired = with_pairs(arm(400), [1.2 + rng.uniform(-0.05, 0.05) for _ in range(300)])
    figures = judge(paired).gate("cost")
    assert figures.result == "fail"
    assert figures.estimate == pytest.approx(0.2, abs=0.01)
    cheap = with_pairs(arm(400), [0.9] * 300)
    assert judge(cheap).gate("cost").result == "pass"


def test_too_few_pairs_is_inconclusive() -> None:
    figures = judge(with_pairs(arm(400), [1.0] * 57)).gate("cost")
    assert (figures.result, figures.note) == ("inconclusive", "57/200 paired samples")


def test_cost_skipped_without_prices() -> None:
    assert judge(arm(400, cost=None)).gate("cost").result == "skipped"
    assert judge(arm(400), baseline=arm(400, cost=0)).gate("cost").result == "skipped"


# Records ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "candidate", [arm(396, 4, ttft=150.0), arm(380, 20), arm(57), arm(10, 10), with_pairs(arm(400), [1.0] * 57)]
)
def test_verdict_is_json_and_recomputable(candidate: ArmWindow) -> None:
    verdict = judge(candidate)
    stored = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    again = Verdict.from_dict(stored)
    assert again == verdict
    assert decide(
        again.gates,
        requests_baseline=again.requests_baseline,
        requests_candidate=again.requests_candidate,
        held_s=again.held_s,
        min_samples=again.min_samples,
        min_step_s=again.min_step_s,
    ) == (verdict.result, verdict.critical, verdict.reason)


def test_figures_are_recomputable_from_estimate_bound_threshold() -> None:
    for candidate in (arm(392, 8), arm(388, 12), arm(380, 20), arm(400, slow=10), noisy_costs(1400, 400)):
        for g in judge(candidate).gates:
            if g.result == "fail" and g.bound is not None:
                assert g.bound > g.threshold
            elif g.result == "pass" and g.gate != "critical_error_ratio":
                assert g.estimate is not None and g.estimate <= g.threshold
