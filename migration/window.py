"""Outcomes of one rollout step, per arm, in a form replicas can add together.

An `ArmWindow` counts what one arm (baseline or candidate) did during a step:

- `attempts`, `attempt_errors`, `attempt_rate_limited`: every call the gateway made
  to the arm's target (first tries, retries, shadow copies): what the arm's upstream
  really did, and what the error gate judges;
- `requests`, `errors`, `rate_limited`: the outcome each client of the arm saw, after
  retries and fallbacks (a failing candidate can look healthy here);
- errors are 5xx, timeouts, broken streams; 429s are kept apart because they measure
  capacity, not quality, and are in neither the requests nor the errors;
- `latency` and `ttft`: histograms (milliseconds) of successful responses only,
  since an error's latency says nothing about the model's speed (and a timeout
  would be counted twice);
- cost of successful responses in integer micro-dollars (count, sum, sum of squares);
- paired cost deltas, recorded on the candidate arm whenever the same prompt was
  answered by both arms (shadowing): (candidate - baseline) / baseline in integer
  parts per million, again as count, sum and sum of squares.

Everything is an integer count or sum, so `merge(a, b)` is exact and order-free:
each replica accumulates its own window and the analysis merges them. Histograms
share one fixed scheme (log-spaced buckets growing 5 % from 1 ms), so bucket
counts from different processes line up. Sums of squares are the one thing that
can outgrow a 64-bit JSON integer; `to_dict` writes them as decimal strings.

All types are frozen; `plus` returns a new window. A hot path that wants to avoid
per-request copies can buffer `Sample`s and fold them in with `ArmWindow.of`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from migration.quality import QualityCounts
from migration.types import Arm

Kind = Literal["ok", "error", "rate_limited"]

GROWTH = 1.05
MIN_MS = 1.0
# 1.05**330 ms is about 3.5 hours; anything slower shares the top bucket.
TOP_INDEX = 330
SCHEME = f"log{GROWTH}@{MIN_MS}ms/{TOP_INDEX}"
_LOG_GROWTH = math.log(GROWTH)
PPM = 1_000_000


def bucket_index(ms: float) -> int:
    """Bucket 0 holds [0, 1 ms); bucket i >= 1 holds [1.05**(i-1), 1.05**i) ms."""
    if not ms >= MIN_MS:  # also catches NaN
        return 0
    if ms == math.inf:
        return TOP_INDEX
    return min(TOP_INDEX, 1 + int(math.log(ms / MIN_MS) / _LOG_GROWTH))


def bucket_bounds(index: int) -> tuple[float, float]:
    if index == 0:
        return 0.0, MIN_MS
    upper = math.inf if index == TOP_INDEX else MIN_MS * GROWTH**index
    return MIN_MS * GROWTH ** (index - 1), upper


def _representative(index: int) -> float:
    # The geometric middle keeps the error within half a bucket (~2.5 %) either way.
    if index == 0:
        return MIN_MS / 2
    if index == TOP_INDEX:
        return bucket_bounds(index)[0]
    return MIN_MS * GROWTH ** (index - 0.5)


def _add_counts(*parts: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    summed: dict[int, int] = {}
    for part in parts:
        for index, count in part:
            summed[index] = summed.get(index, 0) + count
    return tuple(sorted((i, c) for i, c in summed.items() if c))


@dataclass(frozen=True, slots=True)
class Histogram:
    """Sparse bucket counts as sorted (bucket index, count) pairs."""

    counts: tuple[tuple[int, int], ...] = ()
    # Derived once: the gates ask for it often.
    total: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "total", sum(count for _, count in self.counts))

    @classmethod
    def of(cls, values_ms: Iterable[float]) -> Histogram:
        return cls(_add_counts((bucket_index(v), 1) for v in values_ms))

    def merge(self, other: Histogram) -> Histogram:
        if not other.counts:
            return self
        if not self.counts:
            return other
        # Both are sorted by bucket: one pass, as the controller merges on every tick.
        a, b = self.counts, other.counts
        merged: list[tuple[int, int]] = []
        i = j = 0
        while i < len(a) and j < len(b):
            (ia, ca), (ib, cb) = a[i], b[j]
            if ia == ib:
                merged.append((ia, ca + cb))
                i, j = i + 1, j + 1
            elif ia < ib:
                merged.append(a[i])
                i += 1
            else:
                merged.append(b[j])
                j += 1
        merged.extend(a[i:])
        merged.extend(b[j:])
        return Histogram(tuple(merged))

    def minus(self, other: Histogram) -> Histogram:
        """The counts added since `other`, an earlier state of this histogram (never below zero)."""
        taken = dict(other.counts)
        return Histogram(tuple((i, c - taken.get(i, 0)) for i, c in self.counts if c > taken.get(i, 0)))

    def above(self, ms: float) -> tuple[int, int]:
        """Samples surely above `ms` (their bucket starts at or above it), and possibly above it (their bucket
        ends above it): a test of "slower than ms" is judged on the first to fail, on the second to pass."""
        # Bucket `at` holds ms: every bucket above it starts above ms, and it and those above end above ms.
        at = bucket_index(ms)
        surely = possibly = 0
        for index, count in reversed(self.counts):
            if index < at:
                break
            if index > at:
                surely, possibly = surely + count, possibly + count
                continue
            # ms may sit on an edge of its own bucket (floating point decides which side): check both.
            lower, upper = bucket_bounds(index)
            surely += count if lower >= ms else 0
            possibly += count if upper > ms else 0
        return surely, possibly

    def quantile(self, q: float) -> float | None:
        """The q-quantile to bucket resolution, or None when empty."""
        total = self.total
        if total == 0:
            return None
        # The tolerance keeps 0.99 * 200 (= 198.00000000000003) at rank 198.
        rank = max(1, math.ceil(q * total - 1e-9))
        # Walk from the slow end: the quantiles asked for are high ones.
        beyond = total - rank
        seen = 0
        for index, count in reversed(self.counts):
            seen += count
            if seen > beyond:
                return _representative(index)
        return _representative(self.counts[0][0])

    def to_dict(self) -> dict[str, Any]:
        return {"scheme": SCHEME, "counts": {str(i): c for i, c in self.counts}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Histogram:
        if data.get("scheme") != SCHEME:
            raise ValueError(f"histogram scheme {data.get('scheme')!r} is not {SCHEME!r}")
        pairs = [(int(i), int(c)) for i, c in data["counts"].items()]
        if any(not 0 <= i <= TOP_INDEX or c < 0 for i, c in pairs):
            raise ValueError("histogram bucket index or count out of range")
        return cls(_add_counts(pairs))


@dataclass(frozen=True, slots=True)
class Sample:
    """One finished request as an arm saw it."""

    kind: Kind
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cost_micros: int | None = None

    @classmethod
    def of(cls, status: int, latency_s: float, ttft_s: float | None, cost_micros: int) -> Sample | None:
        """How a finished request counts for its arm; None when the client, not the provider, was at fault."""
        kind = kind_of(status)
        if kind == "ok":
            return cls("ok", latency_s * 1000, None if ttft_s is None else ttft_s * 1000, cost_micros)
        return None if kind is None else cls(kind)


def kind_of(status: int) -> Kind | None:
    """How a status counts: None for the client's own 4xx, which says nothing about the arm."""
    if status == 429:
        return "rate_limited"
    if 200 <= status < 300:
        return "ok"
    if 400 <= status < 500 and status != 408:
        return None
    return "error"


@dataclass(frozen=True, slots=True)
class Sums:
    """Count, sum and sum of squares of integers: enough for a mean and its standard error."""

    count: int = 0
    total: int = 0
    squares: int = 0

    @classmethod
    def of(cls, values: Iterable[int]) -> Sums:
        count = total = squares = 0
        for value in values:
            count += 1
            total += value
            squares += value * value
        return cls(count, total, squares)

    def merge(self, other: Sums) -> Sums:
        return Sums(self.count + other.count, self.total + other.total, self.squares + other.squares)

    def minus(self, other: Sums) -> Sums:
        if other.count >= self.count:
            return Sums()
        return Sums(self.count - other.count, self.total - other.total, self.squares - other.squares)

    def variance(self) -> float | None:
        """Sample variance (n - 1); None below two values."""
        if self.count < 2:
            return None
        n = self.count
        return max(0.0, float(Fraction(n * self.squares - self.total * self.total, n * (n - 1))))

    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def standard_error(self) -> float | None:
        """Standard error of the mean (sample variance, n - 1); None below two values."""
        if self.count < 2:
            return None
        n = self.count
        # Exact integer arithmetic until the last step: no cancellation error.
        variance = Fraction(n * self.squares - self.total * self.total, n * (n - 1))
        return math.sqrt(max(0.0, float(variance)) / n)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "sum": self.total, "sum_squares": str(self.squares)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sums:
        return cls(int(data["count"]), int(data["sum"]), int(data["sum_squares"]))


def relative_delta_ppm(candidate_micros: int, baseline_micros: int) -> int | None:
    """(candidate - baseline) / baseline in parts per million; None when the baseline cost nothing."""
    if baseline_micros <= 0:
        return None
    return round(Fraction((candidate_micros - baseline_micros) * PPM, baseline_micros))


@dataclass(frozen=True, slots=True)
class ArmWindow:
    requests: int = 0
    errors: int = 0
    rate_limited: int = 0
    attempts: int = 0
    attempt_errors: int = 0
    attempt_rate_limited: int = 0
    latency: Histogram = field(default_factory=Histogram)
    ttft: Histogram = field(default_factory=Histogram)
    cost: Sums = field(default_factory=Sums)
    pairs: Sums = field(default_factory=Sums)
    # The cheap checks and the judge on compared pairs (migration.quality).
    quality: QualityCounts = field(default_factory=QualityCounts)

    @classmethod
    def of(
        cls, outcomes: Iterable[Sample], paired_deltas_ppm: Iterable[int] = (), attempts: Iterable[Kind] = ()
    ) -> ArmWindow:
        tried = tried_errors = tried_limited = 0
        for kind in attempts:
            if kind == "rate_limited":
                tried_limited += 1
            else:
                tried += 1
                tried_errors += kind == "error"
        requests = errors = rate_limited = 0
        latencies: list[float] = []
        ttfts: list[float] = []
        costs: list[int] = []
        for outcome in outcomes:
            if outcome.kind == "rate_limited":
                rate_limited += 1
                continue
            requests += 1
            if outcome.kind == "error":
                errors += 1
                continue
            if outcome.latency_ms is not None:
                latencies.append(outcome.latency_ms)
            if outcome.ttft_ms is not None:
                ttfts.append(outcome.ttft_ms)
            if outcome.cost_micros is not None:
                costs.append(outcome.cost_micros)
        return cls(
            requests=requests,
            errors=errors,
            rate_limited=rate_limited,
            attempts=tried,
            attempt_errors=tried_errors,
            attempt_rate_limited=tried_limited,
            latency=Histogram.of(latencies),
            ttft=Histogram.of(ttfts),
            cost=Sums.of(costs),
            pairs=Sums.of(paired_deltas_ppm),
        )

    def plus(self, outcome: Sample) -> ArmWindow:
        return merge(self, ArmWindow.of([outcome]))

    def plus_pair(self, candidate_micros: int, baseline_micros: int) -> ArmWindow:
        """Add one shadowed prompt's relative cost delta; ignored when the baseline cost nothing."""
        delta = relative_delta_ppm(candidate_micros, baseline_micros)
        if delta is None:
            return self
        return merge(self, ArmWindow(pairs=Sums.of([delta])))

    @property
    def error_rate(self) -> float | None:
        """As the arm's clients saw it."""
        return self.errors / self.requests if self.requests else None

    @property
    def attempt_error_rate(self) -> float | None:
        """As the arm's upstream did it."""
        return self.attempt_errors / self.attempts if self.attempts else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "rate_limited": self.rate_limited,
            "attempts": {
                "count": self.attempts, "errors": self.attempt_errors, "rate_limited": self.attempt_rate_limited,
            },
            "latency_ms": self.latency.to_dict(),
            "ttft_ms": self.ttft.to_dict(),
            "cost_micros": self.cost.to_dict(),
            "paired_cost_delta_ppm": self.pairs.to_dict(),
            "quality": self.quality.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArmWindow:
        # Windows written before attempts were counted have none.
        tried = data.get("attempts") or {"count": 0, "errors": 0, "rate_limited": 0}
        window = cls(
            requests=int(data["requests"]),
            errors=int(data["errors"]),
            rate_limited=int(data["rate_limited"]),
            attempts=int(tried["count"]),
            attempt_errors=int(tried["errors"]),
            attempt_rate_limited=int(tried["rate_limited"]),
            latency=Histogram.from_dict(data["latency_ms"]),
            ttft=Histogram.from_dict(data["ttft_ms"]),
            cost=Sums.from_dict(data["cost_micros"]),
            pairs=Sums.from_dict(data["paired_cost_delta_ppm"]),
            # Windows written before quality was checked have none.
            quality=QualityCounts.from_dict(data.get("quality") or {}),
        )
        if (not 0 <= window.errors <= window.requests or window.rate_limited < 0
                or not 0 <= window.attempt_errors <= window.attempts or window.attempt_rate_limited < 0):
            raise ValueError("arm window counts are inconsistent")
        return window


def merge(a: ArmWindow, b: ArmWindow) -> ArmWindow:
    """The window of both arms' outcomes together (commutative, associative, exact)."""
    return ArmWindow(
        requests=a.requests + b.requests,
        errors=a.errors + b.errors,
        rate_limited=a.rate_limited + b.rate_limited,
        attempts=a.attempts + b.attempts,
        attempt_errors=a.attempt_errors + b.attempt_errors,
        attempt_rate_limited=a.attempt_rate_limited + b.attempt_rate_limited,
        latency=a.latency.merge(b.latency),
        ttft=a.ttft.merge(b.ttft),
        cost=a.cost.merge(b.cost),
        pairs=a.pairs.merge(b.pairs),
        quality=a.quality.plus(b.quality),
    )


def since(later: ArmWindow, earlier: ArmWindow) -> ArmWindow:
    """What was added between two cumulative windows of the same arm and step (`earlier` is part of `later`)."""
    return ArmWindow(
        requests=max(0, later.requests - earlier.requests),
        errors=max(0, later.errors - earlier.errors),
        rate_limited=max(0, later.rate_limited - earlier.rate_limited),
        attempts=max(0, later.attempts - earlier.attempts),
        attempt_errors=max(0, later.attempt_errors - earlier.attempt_errors),
        attempt_rate_limited=max(0, later.attempt_rate_limited - earlier.attempt_rate_limited),
        latency=later.latency.minus(earlier.latency),
        ttft=later.ttft.minus(earlier.ttft),
        cost=later.cost.minus(earlier.cost),
        pairs=later.pairs.minus(earlier.pairs),
        quality=later.quality.minus(earlier.quality),
    )


@dataclass(frozen=True, slots=True)
class StepWindow:
    """Both arms over the same span: from the step's start (on the rollout's clock) until now."""

    started_at: float
    baseline: ArmWindow = field(default_factory=ArmWindow)
    candidate: ArmWindow = field(default_factory=ArmWindow)

    def arm(self, name: Arm) -> ArmWindow:
        return self.baseline if name == "baseline" else self.candidate

    def plus(self, arm: Arm, outcome: Sample) -> StepWindow:
        return self.with_arm(arm, self.arm(arm).plus(outcome))

    def plus_pair(self, candidate_micros: int, baseline_micros: int) -> StepWindow:
        """A shadowed prompt answered by both arms; the delta is kept on the candidate arm."""
        return self.with_arm("candidate", self.candidate.plus_pair(candidate_micros, baseline_micros))

    def plus_quality(self, arm: Arm, counts: QualityCounts) -> StepWindow:
        return self.with_arm(arm, merge(self.arm(arm), ArmWindow(quality=counts)))

    def with_arm(self, arm: Arm, window: ArmWindow) -> StepWindow:
        if arm == "baseline":
            return StepWindow(self.started_at, window, self.candidate)
        return StepWindow(self.started_at, self.baseline, window)

    def to_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "baseline": self.baseline.to_dict(),
            "candidate": self.candidate.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepWindow:
        return cls(
            started_at=float(data["started_at"]),
            baseline=ArmWindow.from_dict(data["baseline"]),
            candidate=ArmWindow.from_dict(data["candidate"]),
        )


def step_since(later: StepWindow, earlier: StepWindow) -> StepWindow:
    """Both arms' samples added since `earlier`, as a window of the same step (a recent block of it)."""
    return StepWindow(later.started_at, since(later.baseline, earlier.baseline),
                      since(later.candidate, earlier.candidate))


def merge_steps(a: StepWindow, b: StepWindow) -> StepWindow:
    """Merge replicas' windows of the same step; windows of different steps must not mix."""
    if a.started_at != b.started_at:
        raise ValueError(f"windows of different steps (started {a.started_at} and {b.started_at})")
    return StepWindow(a.started_at, merge(a.baseline, b.baseline), merge(a.candidate, b.candidate))
