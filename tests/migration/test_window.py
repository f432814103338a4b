"""Windows: what counts where, exact merges across replicas, p99 to bucket resolution, storage."""

from __future__ import annotations

import json
import math
import random
import statistics

import pytest

from migration.window import (
    GROWTH,
    TOP_INDEX,
    ArmWindow,
    Histogram,
    Sample,
    StepWindow,
    Sums,
    bucket_bounds,
    bucket_index,
    merge,
    merge_steps,
    relative_delta_ppm,
)


def outcomes(seed: int, n: int) -> list[Sample]:
    rng = random.Random(seed)
    result: list[Sample] = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.02:
            result.append(Sample("rate_limited"))
        elif roll < 0.05:
            result.append(Sample("error", latency_ms=30000.0))
        else:
            ttft = rng.lognormvariate(5, 0.4) if rng.random() < 0.5 else None
            result.append(Sample("ok", rng.lognormvariate(6, 0.5), ttft, rng.randrange(100, 5000)))
    return result


@pytest.mark.parametrize("ms", [0.0, 0.5, 1.0, 1.04, 1.06, 13.7, 799.9, 800.0, 1e5, 3.3e6])
def test_value_falls_inside_its_bucket(ms: float) -> None:
    low, high = bucket_bounds(bucket_index(ms))
    assert low <= ms < high or math.isclose(ms, low) or math.isclose(ms, high)


@pytest.mark.parametrize(("ms", "index"), [(-5.0, 0), (math.nan, 0), (math.inf, TOP_INDEX), (1e300, TOP_INDEX)])
def test_odd_values_are_clamped(ms: float, index: int) -> None:
    assert bucket_index(ms) == index


def test_buckets_grow_five_percent() -> None:
    for index in (1, 50, 200):
        low, high = bucket_bounds(index)
        assert math.isclose(high / low, GROWTH)


@pytest.mark.parametrize("seed", range(5))
def test_p99_is_accurate_to_half_a_bucket(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.lognormvariate(6, 0.6) for _ in range(20000)]
    exact = sorted(values)[math.ceil(0.99 * len(values)) - 1]
    estimate = Histogram.of(values).quantile(0.99)
    assert estimate is not None
    assert 1 / math.sqrt(GROWTH) - 1e-9 <= estimate / exact <= math.sqrt(GROWTH) + 1e-9


def test_quantile_rank_is_exact_for_round_counts() -> None:
    # 198 fast and 2 slow: the 99th percentile of 200 is the 198th value, still fast.
    histogram = Histogram.of([100.0] * 198 + [5000.0] * 2)
    assert histogram.quantile(0.99) == pytest.approx(100.0, rel=0.03)
    assert Histogram().quantile(0.99) is None


def test_outcome_kinds_count_where_they_belong() -> None:
    window = ArmWindow.of(
        [
            Sample("ok", 100.0, 20.0, 1000),
            Sample("ok", 300.0, None, None),
            Sample("error", 30000.0, None, 50),
            Sample("rate_limited", 5.0),
        ]
    )
    assert (window.requests, window.errors, window.rate_limited) == (3, 1, 1)
    assert window.error_rate == pytest.approx(1 / 3)
    # Only successful responses carry latency, TTFT and cost.
    assert window.latency.total == 2
    assert window.ttft.total == 1
    assert (window.cost.count, window.cost.total) == (1, 1000)


def test_plus_is_of_one_at_a_time() -> None:
    items = outcomes(1, 300)
    folded = ArmWindow()
    for item in items:
        folded = folded.plus(item)
    assert folded == ArmWindow.of(items)


def test_merge_is_exact_commutative_and_associative() -> None:
    a, b, c = (outcomes(seed, 400) for seed in (1, 2, 3))
    wa, wb, wc = ArmWindow.of(a), ArmWindow.of(b), ArmWindow.of(c)
    assert merge(wa, wb) == ArmWindow.of(a + b)
    assert merge(wa, wb) == merge(wb, wa)
    assert merge(merge(wa, wb), wc) == merge(wa, merge(wb, wc))
    assert merge(wa, ArmWindow()) == wa


def test_cost_sums_give_mean_and_standard_error() -> None:
    values = [random.Random(4).randrange(10, 10**7) for _ in range(500)]
    sums = Sums.of(values)
    assert sums.mean() == pytest.approx(statistics.fmean(values))
    assert sums.standard_error() == pytest.approx(statistics.stdev(values) / math.sqrt(len(values)))
    assert Sums.of([5]).standard_error() is None
    assert Sums().mean() is None


@pytest.mark.parametrize(
    ("candidate", "baseline", "ppm"),
    [(1100, 1000, 100_000), (900, 1000, -100_000), (1000, 1000, 0), (1, 3, -666_667), (5, 0, None)],
)
def test_relative_delta_in_ppm(candidate: int, baseline: int, ppm: int | None) -> None:
    assert relative_delta_ppm(candidate, baseline) == ppm


def test_pairs_recorded_on_the_candidate_arm() -> None:
    window = StepWindow(10.0).plus_pair(1100, 1000).plus_pair(1300, 1000).plus_pair(7, 0)
    assert window.candidate.pairs == Sums(2, 400_000, 100_000**2 + 300_000**2)
    assert window.baseline == ArmWindow()


def test_round_trip_through_json() -> None:
    window = StepWindow(123.25, ArmWindow.of(outcomes(5, 500)), ArmWindow.of(outcomes(6, 500), [10**9, -3]))
    stored = json.dumps(window.to_dict())
    assert StepWindow.from_dict(json.loads(stored)) == window
    # Sums of squares travel as strings: they can outgrow 64-bit JSON integers.
    assert isinstance(window.to_dict()["candidate"]["paired_cost_delta_ppm"]["sum_squares"], str)


def test_big_sums_survive_storage() -> None:
    huge = ArmWindow(cost=Sums(3, 10**15, 10**30))
    assert ArmWindow.from_dict(json.loads(json.dumps(huge.to_dict()))) == huge


def test_foreign_histogram_scheme_is_refused() -> None:
    data = Histogram.of([1.0]).to_dict()
    with pytest.raises(ValueError, match="scheme"):
        Histogram.from_dict({**data, "scheme": "log1.1@1ms/200"})
    with pytest.raises(ValueError, match="range"):
        Histogram.from_dict({**data, "counts": {str(TOP_INDEX + 1): 1}})


def test_inconsistent_counts_are_refused() -> None:
    data = ArmWindow.of([Sample("error")]).to_dict()
    with pytest.raises(ValueError, match="inconsistent"):
        ArmWindow.from_dict({**data, "requests": 0})


def test_step_windows_merge_only_within_a_step() -> None:
    one = StepWindow(5.0).plus("baseline", Sample("ok", 10.0))
    two = StepWindow(5.0).plus("candidate", Sample("error"))
    merged = merge_steps(one, two)
    assert (merged.baseline.requests, merged.candidate.errors) == (1, 1)
    with pytest.raises(ValueError, match="different steps"):
        merge_steps(one, StepWindow(6.0))
