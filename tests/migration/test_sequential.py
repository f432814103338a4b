"""The anytime-valid tests: wrong no more often than alpha however often they are looked at, and they find
what is there."""

from __future__ import annotations

import math
import random

import pytest

from migration.sequential import block_alpha, log_evidence, mean_half_width

ALPHA = 0.05
NEEDED = math.log(1 / ALPHA)


def looks_until(rate: float, theta: float, direction: str, seed: int, trials: int = 3000, every: int = 5) -> int | None:
    """Bernoulli(rate) trials looked at every `every` trials: the first look that shows `direction`, if any."""
    draw = random.Random(seed).random
    k = 0
    for n in range(1, trials + 1):
        k += draw() < rate
        if n % every == 0 and log_evidence(n, k, theta, direction) >= NEEDED:  # type: ignore[arg-type]
            return n
    return None


@pytest.mark.parametrize(("theta", "direction"), [(0.02, "above"), (0.02, "below"), (0.01, "above")])
def test_at_the_threshold_repeated_looks_are_wrong_less_than_alpha(theta: float, direction: str) -> None:
    wrong = sum(looks_until(theta, theta, direction, seed) is not None for seed in range(400))
    # 600 looks each; a fixed-sample test at 5 % would be wrong in most runs.
    assert wrong / 400 <= ALPHA


def test_what_is_there_is_found() -> None:
    found = [looks_until(0.10, 0.02, "above", seed) for seed in range(50)]
    assert all(n is not None and n < 300 for n in found)
    assert all(looks_until(0.002, 0.02, "below", seed) is not None for seed in range(50))


def test_no_evidence_on_the_far_side_of_the_estimate() -> None:
    assert log_evidence(1000, 10, 0.02, "above") == 0.0
    assert log_evidence(1000, 50, 0.02, "below") == 0.0
    assert log_evidence(0, 0, 0.02, "above") == 0.0
    # More of the same is more evidence.
    assert log_evidence(2000, 200, 0.02, "above") > log_evidence(1000, 100, 0.02, "above") > 0


def test_the_blocks_of_a_step_share_alpha() -> None:
    assert sum(block_alpha(0.01, b) for b in range(1, 100_000)) == pytest.approx(0.01, rel=1e-4)
    assert block_alpha(0.01, 1) > block_alpha(0.01, 2) > block_alpha(0.01, 10)


def test_the_mean_sequence_covers_the_mean_under_repeated_looks() -> None:
    misses = 0
    for seed in range(300):
        draw = random.Random(seed)
        total = squares = 0.0
        for n in range(1, 2001):
            x = draw.gauss(1.0, 0.5)
            total, squares = total + x, squares + x * x
            if n % 20 == 0:
                mean = total / n
                width = mean_half_width(n, (squares - total * total / n) / (n - 1), ALPHA, 200)
                assert width is not None
                if abs(mean - 1.0) > width:
                    misses += 1
                    break
    assert misses / 300 <= ALPHA


def test_the_mean_sequence_narrows_and_needs_two_samples() -> None:
    assert mean_half_width(1, 1.0, 0.01, 100) is None
    assert mean_half_width(10, 0.0, 0.01, 100) == 0.0
    widths = [mean_half_width(n, 1.0, 0.01, 100) for n in (10, 100, 1000, 10000)]
    assert widths == sorted(widths, reverse=True)
