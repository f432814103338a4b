"""Synthetic per-interval outcomes of a migration's two arms, identical for every policy judged on them.

A run is a sequence of ticks (one per `interval_s`). Each tick draws, once, what the
candidate's upstream did in that interval: requests (Poisson at the scenario's rate),
first attempts that failed, retries that failed too, the latency of each answer, the
cost of each request, and the same for a healthy baseline. A policy then reads the
tick as its phase sees it: in shadow the candidate gets copies, which the gateway
never retries; live, a failed first attempt is retried once on the candidate (the
default `max_attempts_per_target: 2`) and a request failing twice falls back to the
baseline, so its client is served.

The candidate's rate is the same in every phase (shadow copies, then its share of
live traffic): evidence about the candidate accrues at the scenario's rate whatever
the step, which is what the rows compare. The baseline is exercised at the same rate
while it serves live traffic, and by the post-promotion shadow copies (5 %) once the
candidate serves everything.

Ticks are drawn in chunks with numpy, as count vectors (`Counts`) that policies add up
between the ticks they judge; `Counts.window` turns a running total into the real
`migration.window.ArmWindow`. Latency bucket counts are drawn multinomially from the
lognormal's probability of each bucket, and costs from 64 equally likely quantile
points of theirs, so a tick costs the same to draw at 0.5 or 100 requests/s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

from migration.window import GROWTH, MIN_MS, PPM, TOP_INDEX, ArmWindow, Histogram, Sums, bucket_bounds

Start = Literal["start", "canary", "last", "promoted"]
LATENCY_SIGMA = 0.3
COST_MICROS = 1000
COST_SIGMA = 0.3
PAIR_SIGMA = 0.05
RETRY_BACKOFF_MS = 100.0
POST_PROMOTION_SHARE = 0.05
BUCKETS = TOP_INDEX + 1
CHUNK = 256
_Z99 = 2.3263
_LOG_GROWTH = math.log(GROWTH)
# Positions in a count vector.
REQUESTS, ERRORS, ATTEMPTS, ATTEMPT_ERRORS, COST_N, COST_SUM, COST_SQ, PAIR_N, PAIR_SUM, PAIR_SQ = range(10)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    rate: float
    error: float = 0.01
    p99_ms: float = 600.0
    cost_increase: float = 0.0
    start: Start = "start"
    # A change of the candidate's error rate `change_at_s` after the run starts.
    change_at_s: float | None = None
    changed_error: float = 0.0
    horizon_s: float = 36 * 3600.0

    def error_at(self, t: np.ndarray) -> np.ndarray:
        if self.change_at_s is None:
            return np.full(t.shape, self.error)
        return np.where(t > self.change_at_s, self.changed_error, self.error)


@dataclass(slots=True)
class Counts:
    """An arm over some intervals: scalar counts (see the positions above) and latency bucket counts."""

    scalars: np.ndarray
    latency: np.ndarray

    @classmethod
    def zero(cls) -> Counts:
        return cls(np.zeros(10, dtype=np.int64), np.zeros(BUCKETS, dtype=np.int64))

    def add(self, other: Counts) -> None:
        self.scalars += other.scalars
        self.latency += other.latency

    def copy(self) -> Counts:
        return Counts(self.scalars.copy(), self.latency.copy())

    def minus(self, earlier: Counts) -> Counts:
        return Counts(self.scalars - earlier.scalars, self.latency - earlier.latency)

    def maybe_slower(self, ms: float) -> tuple[int, int]:
        """(answers whose bucket ends above ms, answers): never fewer than the gate's "surely slower"."""
        at = min(TOP_INDEX, 1 + int(math.log(ms / MIN_MS) / _LOG_GROWTH))
        return int(self.latency[max(0, at - 1):].sum()), int(self.latency.sum())

    def window(self) -> ArmWindow:
        s = [int(v) for v in self.scalars]
        present = np.nonzero(self.latency)[0]
        latency = Histogram(tuple(zip(present.tolist(), self.latency[present].tolist(), strict=True)))
        return ArmWindow(s[REQUESTS], s[ERRORS], 0, s[ATTEMPTS], s[ATTEMPT_ERRORS], 0, latency, Histogram(),
                         Sums(s[COST_N], s[COST_SUM], s[COST_SQ]), Sums(s[PAIR_N], s[PAIR_SUM], s[PAIR_SQ]))


@dataclass(frozen=True, slots=True)
class Tick:
    """One interval, as drawn once for every policy: each arm as each phase sees it."""

    n: int
    # Candidate answers slower than 800 ms in the interval, for the reference policies' per-interval p99.
    slow: int
    shadow: Counts          # the candidate answering shadow copies (one attempt each), every answer paired
    live: Counts            # the candidate serving clients: a failed first attempt retried once; unpaired
    live_copied: Counts     # the same, its post-promotion copies to the old baseline paired (100 % step, promoted)
    baseline_live: Counts
    baseline_copies: Counts


class Streams:
    """A run's ticks in order, drawn a chunk at a time (the policies of a run advance together)."""

    def __init__(self, scenario: Scenario, seed: int, interval_s: float) -> None:
        self.scenario, self.interval_s = scenario, interval_s
        self._rng = np.random.default_rng(seed)
        self._law = _Law(scenario)
        self._chunk: list[Tick] = []
        self._first = 0

    def tick(self, index: int) -> Tick:
        if not self._first <= index < self._first + len(self._chunk):
            if index != self._first + len(self._chunk):
                raise ValueError("ticks are read in order")
            self._first, self._chunk = index, self._draw(index, CHUNK)
        return self._chunk[index - self._first]

    def _draw(self, first: int, k: int) -> list[Tick]:
        rng, s, law = self._rng, self.scenario, self._law
        p = s.error_at((np.arange(first, first + k) + 1) * self.interval_s)
        n = rng.poisson(s.rate * self.interval_s, k)
        f1 = rng.binomial(n, p)
        f2 = rng.binomial(f1, p)
        copies = rng.binomial(n, POST_PROMOTION_SHARE)
        base_n = rng.poisson(s.rate * self.interval_s, k)
        base_failed = rng.binomial(base_n, 0.01)
        zero = np.zeros(k, dtype=np.int64)
        first_hist = rng.multinomial(n - f1, law.latency)
        live_hist = first_hist + rng.multinomial(f1 - f2, law.retried)
        shadow = _rows(n, f1, n, f1, first_hist, law.cost_sums(rng, n - f1), law.pair_sums(rng, n - f1))
        live_costs = law.cost_sums(rng, n - f2)
        live = _rows(n, zero, n + f1, f1 + f2, live_hist, live_costs, _no_sums(k))
        live_copied = _rows(n, zero, n + f1, f1 + f2, live_hist, live_costs, law.pair_sums(rng, copies))
        baseline_live = _rows(base_n, base_failed, base_n, base_failed,
                              rng.multinomial(base_n - base_failed, law.base_latency),
                              law.base_cost_sums(rng, base_n - base_failed), _no_sums(k))
        baseline_copies = _rows(copies, zero, copies, zero, rng.multinomial(copies, law.base_latency),
                                law.base_cost_sums(rng, copies), _no_sums(k))
        slow = live_hist[:, law.slower_from:].sum(axis=1)
        return [
            Tick(int(n[i]), int(slow[i]), shadow[i], live[i], live_copied[i], baseline_live[i], baseline_copies[i])
            for i in range(k)
        ]


POINTS = 64


class _Law:
    """The scenario's distributions, as probabilities over latency buckets and equally likely cost points:
    a tick's bucket counts and sums are drawn from them directly (multinomially), at any traffic rate."""

    def __init__(self, scenario: Scenario) -> None:
        median = scenario.p99_ms / math.exp(_Z99 * LATENCY_SIGMA)
        self.latency = _bucket_probabilities(lambda x: _lognormal_cdf(x, median, LATENCY_SIGMA))
        self.base_latency = _bucket_probabilities(
            lambda x: _lognormal_cdf(x, 600.0 / math.exp(_Z99 * LATENCY_SIGMA), LATENCY_SIGMA))
        # An answer after a failed attempt: what its client waited is the failed attempt, the backoff, the answer.
        sample = np.random.default_rng(0).lognormal(math.log(median), LATENCY_SIGMA, (2, 200_000)).sum(axis=0)
        self.retried = np.bincount(_bucket_indexes(sample + RETRY_BACKOFF_MS), minlength=BUCKETS) / sample.size
        quantiles = (np.arange(POINTS) + 0.5) / POINTS
        normal = np.array([NormalDist().inv_cdf(q) for q in quantiles])
        cost_mean = COST_MICROS * (1 + scenario.cost_increase)
        self.costs = np.maximum(1, np.rint(cost_mean * np.exp(COST_SIGMA * normal - COST_SIGMA**2 / 2)))
        self.base_costs = np.maximum(1, np.rint(COST_MICROS * np.exp(COST_SIGMA * normal - COST_SIGMA**2 / 2)))
        self.pairs = np.rint(((1 + scenario.cost_increase) * np.exp(PAIR_SIGMA * normal) - 1) * PPM)
        self.slower_from = _bucket_indexes(np.array([800.0]))[0] + 1

    def cost_sums(self, rng: np.random.Generator, n: np.ndarray) -> np.ndarray:
        return _point_sums(rng, n, self.costs)

    def base_cost_sums(self, rng: np.random.Generator, n: np.ndarray) -> np.ndarray:
        return _point_sums(rng, n, self.base_costs)

    def pair_sums(self, rng: np.random.Generator, n: np.ndarray) -> np.ndarray:
        return _point_sums(rng, n, self.pairs)


def _point_sums(rng: np.random.Generator, n: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(count, sum, sum of squares) of n draws from equally likely `points`, as (k, 3) integers."""
    counts = rng.multinomial(n, np.full(points.size, 1 / points.size))
    return np.column_stack([n, counts @ points, counts @ (points * points)]).astype(np.int64)


def _no_sums(k: int) -> np.ndarray:
    return np.zeros((k, 3), dtype=np.int64)


def _lognormal_cdf(x: float, median: float, sigma: float) -> float:
    return 0.0 if x <= 0 else NormalDist().cdf(math.log(x / median) / sigma)


def _bucket_probabilities(cdf: Callable[[float], float]) -> np.ndarray:
    edges = [bucket_bounds(i) for i in range(BUCKETS)]
    probabilities = np.array([cdf(upper) - cdf(lower) if upper != math.inf else 1 - cdf(lower)
                              for lower, upper in edges])
    return probabilities / probabilities.sum()


def _bucket_indexes(values_ms: np.ndarray) -> np.ndarray:
    """migration.window.bucket_index over an array at once."""
    ratio = np.maximum(values_ms, MIN_MS) / MIN_MS
    index = np.where(values_ms < MIN_MS, 0, np.minimum(TOP_INDEX, 1 + np.floor(np.log(ratio) / _LOG_GROWTH)))
    return index.astype(np.int64)


def _rows(requests: np.ndarray, errors: np.ndarray, attempts: np.ndarray, attempt_errors: np.ndarray,
          latency: np.ndarray, costs: np.ndarray, pairs: np.ndarray) -> list[Counts]:
    scalars = np.column_stack([requests, errors, attempts, attempt_errors, costs, pairs]).astype(np.int64)
    return [Counts(scalars[i], latency[i].astype(np.int64)) for i in range(len(requests))]
