"""Anytime-valid tests: evidence that stays honest however often the controller looks.

Every analysis tick looks at the step's samples again. A fixed-sample bound checked
at every tick is wrong more often than its confidence says (each look is another
chance for noise to cross it), so the gates use tests whose error guarantee holds
uniformly over all looks.

**Proportions** (error rate; share of answers slower than a latency threshold): a
mixture sequential probability ratio test (Robbins 1970; Wald 1947), written as an
e-process (Ramdas, Grünwald, Vovk and Shafer 2023, "Game-theoretic statistics and
safe anytime-valid inference"). To show that a rate p is above theta, the evidence
after n trials with k events is

    E_n = mean over j of  (p_j / theta)**k * ((1 - p_j) / (1 - theta))**(n - k)

for a fixed grid of alternatives p_j > theta. For any true p <= theta each factor is a
nonnegative supermartingale with mean at most 1, so by Ville's inequality
P(E_n >= 1/alpha for some n) <= alpha: "above" is declared on E_n >= 1/alpha and is
wrong with probability at most alpha, whenever and however often it is checked. The
same with alternatives p_j < theta shows "below". Everything depends on (n, k) alone,
so a verdict is recomputed from two counts (migration.verify).

**Means** (cost per request, paired cost increases): the asymptotic confidence
sequence of Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas (2023), "Time-uniform
central limit theory and asymptotic confidence sequences" (Annals of Statistics,
Theorem 2.2), a normal-mixture boundary around the running mean with the sample
variance plugged in, tuned to be tightest at `n_star` samples. It is valid as the
sample grows (like the t-interval it replaces), from the count, sum and sum of
squares alone.

**Recent blocks.** A regression that starts late in a step is diluted by the step's
earlier samples. The gates therefore also test the current block of the step (its
samples since the last block boundary, blocks of `recent_window_s`) on its own. The
blocks of a step are disjoint, and block b is tested at alpha * 6 / (pi**2 * b**2):
those levels sum to alpha, so all blocks of a step together, however long it is
held, still falsely fail with probability at most alpha.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Direction = Literal["above", "below"]

# Alternatives as multiples of theta: near ones catch a small excess after many samples, far ones a large
# excess after few. Uniform weights; the grid's size costs log(len) in evidence.
ABOVE_FACTORS = (1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 25.0)
BELOW_FACTORS = (0.8, 0.6, 0.4, 0.2, 0.05)


def _log_mean_exp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values) / len(values))


def log_evidence(n: int, k: int, theta: float, direction: Direction) -> float:
    """log E_n that the event rate is `direction` theta after k events in n trials, floored at 0 (no evidence)."""
    if n <= 0:
        return 0.0
    estimate = k / n
    # Every alternative on the far side of the estimate has a likelihood ratio <= 1: no evidence.
    if (estimate <= theta) if direction == "above" else (estimate >= theta):
        return 0.0
    factors = ABOVE_FACTORS if direction == "above" else BELOW_FACTORS
    log_theta, log_not_theta = math.log(theta), math.log1p(-theta)
    terms = []
    for factor in factors:
        p = min(theta * factor, 1 - (1 - theta) * 1e-3)  # an alternative must stay inside (0, 1)
        term = (n - k) * (math.log1p(-p) - log_not_theta)
        if k:
            term += k * (math.log(p) - log_theta)
        terms.append(term)
    return max(0.0, _log_mean_exp(terms))


def block_alpha(alpha: float, block: int) -> float:
    """The level of a step's `block`-th recent block (1-based); over every block of a step they sum to alpha."""
    return alpha * 6 / (math.pi**2 * block * block)


def mean_half_width(n: int, variance: float, alpha: float, n_star: int) -> float | None:
    """Half-width of the time-uniform (1 - alpha) confidence sequence for a mean; None below two samples."""
    if n < 2:
        return None
    if variance <= 0:
        return 0.0
    log_alpha = math.log(alpha)
    # rho^2 * variance: Waudby-Smith et al.'s choice, tightest around n_star samples.
    c = (-2 * log_alpha + math.log(-2 * log_alpha + 1)) / max(1, n_star)
    scaled = n * c + 1
    return math.sqrt(variance * 2 * scaled / (n * n * c) * math.log(math.sqrt(scaled) / alpha))
