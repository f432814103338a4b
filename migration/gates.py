"""Is the candidate good enough to advance? Thresholds + a step's window -> a verdict.

Every gate compares a candidate figure with a threshold through two numbers:

    estimate  the figure as measured (error ratio, p99 ms, relative cost increase)
    bound     a one-sided LOWER confidence bound on it, at `wilson_z`

and judges  fail          if bound > threshold   (confidently too high)
            pass          if estimate <= threshold
            inconclusive  otherwise              (looks too high, not proven yet)

so noise at low traffic never fails a good candidate, and a candidate that only
looks bad holds its step instead of advancing. The bounds:

- error_rate: Wilson score lower bound of errors / requests (429s are excluded);
- latency_p99, ttft_p99: a distribution-free bound on the quantile: the highest
  bucket edge above which the Wilson lower bound of the share of samples still
  exceeds 1 %, i.e. "p99 is at least this, with confidence";
- cost: mean (candidate - baseline) / baseline over shadowed pairs when the window
  has pairs, else the ratio of the arms' mean costs minus 1; the bound subtracts
  z standard errors (delta method for the ratio).

The verdict: a critical candidate (error ratio >= 0.5 over >= 20 requests by
default) fails at once, whatever the sample minimums. Otherwise, until both arms
have `min_samples` requests and the step has been held `min_step_s`, the verdict
is inconclusive and says what is missing. Then any failing gate fails the
verdict, any inconclusive gate keeps it inconclusive, and all passing (or skipped)
gates pass it. A `Verdict` carries every input of that last step, so an audit
record can show, and `decide` can recompute, why it came out as it did.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from config.migration import GateThresholds, StepPlan
from migration.window import PPM, Histogram, StepWindow, bucket_bounds

Result = Literal["pass", "fail", "inconclusive"]
GateResult = Literal["pass", "fail", "inconclusive", "skipped"]
QUANTILE = 0.99


def wilson_bounds(errors: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when there is no data."""
    if n <= 0:
        return 0.0, 1.0
    p = errors / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    denominator = 1 + z2 / n
    return max(0.0, (centre - margin) / denominator), min(1.0, (centre + margin) / denominator)


@dataclass(frozen=True, slots=True)
class GateFigures:
    gate: str
    samples_baseline: int
    samples_candidate: int
    estimate: float | None
    # The same figure on the baseline arm, for the reader; no gate is relative to it but cost.
    baseline_estimate: float | None
    bound: float | None
    threshold: float
    result: GateResult
    note: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateFigures:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Verdict:
    result: Result
    critical: bool
    reason: str
    gates: tuple[GateFigures, ...]
    # Identifies the step judged: the rollout rejects a verdict about an earlier step.
    step_started_at: float
    evaluated_at: float
    requests_baseline: int
    requests_candidate: int
    min_samples: int
    min_step_s: float

    @property
    def held_s(self) -> float:
        return self.evaluated_at - self.step_started_at

    def gate(self, name: str) -> GateFigures:
        return next(g for g in self.gates if g.gate == name)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gates"] = [g.to_dict() for g in self.gates]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        fields = dict(data)
        fields["gates"] = tuple(GateFigures.from_dict(g) for g in data["gates"])
        return cls(**fields)


def _judge(estimate: float, bound: float | None, threshold: float) -> GateResult:
    if bound is not None and bound > threshold:
        return "fail"
    return "pass" if estimate <= threshold else "inconclusive"


def _critical(window: StepWindow, th: GateThresholds) -> GateFigures:
    base, cand = window.baseline, window.candidate
    ratio = cand.error_rate
    figures: dict[str, Any] = {
        "gate": "critical_error_ratio",
        "samples_baseline": base.requests,
        "samples_candidate": cand.requests,
        "estimate": ratio,
        "baseline_estimate": base.error_rate,
        "bound": None,
        "threshold": th.critical_error_rate,
    }
    if ratio is None or cand.requests < th.critical_min_requests:
        note = f"critical guard needs {th.critical_min_requests} requests, candidate has {cand.requests}"
        return GateFigures(**figures, result="skipped", note=note)
    share = f"candidate error ratio {ratio:.3f} ({cand.errors}/{cand.requests})"
    if ratio >= th.critical_error_rate:
        return GateFigures(**figures, result="fail", note=f"{share} >= {th.critical_error_rate}")
    return GateFigures(**figures, result="pass", note=f"{share} < {th.critical_error_rate}")


def _error_rate(window: StepWindow, th: GateThresholds) -> GateFigures:
    base, cand = window.baseline, window.candidate
    capacity = f"429s counted apart: baseline {base.rate_limited}, candidate {cand.rate_limited}"
    samples = (base.requests, cand.requests)
    if cand.requests == 0:
        note = f"candidate has no requests; {capacity}"
        return GateFigures("error_rate", *samples, None, base.error_rate, None, th.error_rate, "inconclusive", note)
    estimate = cand.errors / cand.requests
    lower, _ = wilson_bounds(cand.errors, cand.requests, th.wilson_z)
    result = _judge(estimate, lower, th.error_rate)
    figure = f"error rate {estimate:.4f} ({cand.errors}/{cand.requests}), lower bound {lower:.4f}"
    note = {
        "fail": f"{figure} > {th.error_rate}",
        "pass": f"{figure}; {estimate:.4f} <= {th.error_rate}",
        "inconclusive": f"{figure}; above {th.error_rate} but not significant yet",
    }[result]
    return GateFigures(
        "error_rate", *samples, estimate, base.error_rate, lower, th.error_rate, result, f"{note}; {capacity}"
    )


def quantile_lower_bound(histogram: Histogram, q: float, z: float) -> float | None:
    """A lower confidence bound on the q-quantile: the highest bucket edge x such that the
    share of samples >= x is, by its Wilson lower bound, still above 1 - q."""
    total = histogram.total
    if total == 0:
        return None
    at_or_above = 0
    for index, count in reversed(histogram.counts):
        at_or_above += count
        if wilson_bounds(at_or_above, total, z)[0] > 1 - q:
            return bucket_bounds(index)[0]
    return 0.0


def _quantile(
    gate: str, baseline: Histogram, candidate: Histogram, threshold: float, z: float, min_samples: int, optional: bool
) -> GateFigures:
    n = candidate.total
    if n == 0:
        note = f"no candidate {gate} samples"
        result: GateResult = "skipped" if optional else "inconclusive"
        return GateFigures(gate, baseline.total, 0, None, baseline.quantile(QUANTILE), None, threshold, result, note)
    estimate = candidate.quantile(QUANTILE)
    bound = quantile_lower_bound(candidate, QUANTILE, z)
    assert estimate is not None
    result = _judge(estimate, bound, threshold)
    figure = f"p99 {estimate:.0f} ms over {n} samples, lower bound {bound:.0f} ms"
    note = {
        "fail": f"{figure} > {threshold:g} ms",
        "pass": f"{figure}; {estimate:.0f} <= {threshold:g} ms",
        "inconclusive": f"{figure}; above {threshold:g} ms but not significant yet",
    }[result]
    # Streams can be a small share of traffic: too few TTFT samples may fail a
    # step on clear evidence, but must not hold it.
    if optional and n < min_samples and result != "fail":
        result, note = "skipped", f"only {n}/{min_samples} samples, judged on clear evidence only; {note}"
    return GateFigures(gate, baseline.total, n, estimate, baseline.quantile(QUANTILE), bound, threshold, result, note)


def _cost(window: StepWindow, th: GateThresholds, min_samples: int) -> GateFigures:
    base, cand = window.baseline.cost, window.candidate.cost
    pairs = window.candidate.pairs
    z, threshold = th.wilson_z, th.cost_increase
    if pairs.count:
        # Shadowed prompts answered by both arms: compare like with like.
        n = pairs.count
        mean, se = pairs.mean(), pairs.standard_error()
        assert mean is not None
        estimate = mean / PPM
        bound = None if se is None else estimate - z * se / PPM
        kind = f"mean paired increase {estimate:+.4f} over {n} pairs"
        if n < min_samples:
            return GateFigures(
                "cost", n, n, estimate, None, bound, threshold, "inconclusive", f"{n}/{min_samples} paired samples"
            )
        samples = (n, n)
        baseline_estimate = None
    else:
        mean_b, mean_c = base.mean(), cand.mean()
        samples = (base.count, cand.count)
        if mean_b is None or mean_c is None:
            return GateFigures("cost", *samples, None, mean_b, None, threshold, "skipped", "no cost recorded")
        if mean_b == 0:
            note = "baseline mean cost is zero: relative increase undefined"
            return GateFigures("cost", *samples, None, mean_b, None, threshold, "skipped", note)
        ratio = mean_c / mean_b
        estimate = ratio - 1
        se_b, se_c = base.standard_error(), cand.standard_error()
        if se_b is None or se_c is None:
            bound = None
        else:
            relative_c = se_c / mean_c if mean_c else 0.0
            bound = estimate - z * ratio * math.hypot(relative_c, se_b / mean_b)
        kind = f"mean cost {mean_c:.0f} vs {mean_b:.0f} micro-USD ({estimate:+.4f})"
        baseline_estimate = mean_b
    result = _judge(estimate, bound, threshold)
    shown_bound = "n/a" if bound is None else f"{bound:+.4f}"
    note = {
        "fail": f"{kind}, lower bound {shown_bound} > {threshold:+}",
        "pass": f"{kind} <= {threshold:+}",
        "inconclusive": f"{kind} above {threshold:+} but not significant yet (lower bound {shown_bound})",
    }[result]
    return GateFigures("cost", *samples, estimate, baseline_estimate, bound, threshold, result, note)


def decide(
    gates: Sequence[GateFigures],
    *,
    requests_baseline: int,
    requests_candidate: int,
    held_s: float,
    min_samples: int,
    min_step_s: float,
) -> tuple[Result, bool, str]:
    """(result, critical, reason) from the gate figures and the step's sample/time minimums."""
    critical = [g for g in gates if g.gate == "critical_error_ratio" and g.result == "fail"]
    if critical:
        return "fail", True, f"critical: {critical[0].note}"
    missing = [
        f"{arm} has {n}/{min_samples} samples"
        for arm, n in (("baseline", requests_baseline), ("candidate", requests_candidate))
        if n < min_samples
    ]
    if held_s < min_step_s:
        missing.append(f"step held {held_s:.0f} s of {min_step_s:.0f} s")
    if missing:
        return "inconclusive", False, "; ".join(missing)
    failed = [f"{g.gate}: {g.note}" for g in gates if g.result == "fail"]
    if failed:
        return "fail", False, "; ".join(failed)
    unsure = [f"{g.gate}: {g.note}" for g in gates if g.result == "inconclusive"]
    if unsure:
        return "inconclusive", False, "; ".join(unsure)
    return "pass", False, "all gates pass"


def evaluate(window: StepWindow, thresholds: GateThresholds, plan: StepPlan, now: float) -> Verdict:
    """Judge the step's window at `now` (the same clock as `window.started_at`)."""
    base, cand = window.baseline, window.candidate
    z = thresholds.wilson_z
    gates = (
        _critical(window, thresholds),
        _error_rate(window, thresholds),
        _quantile("latency_p99", base.latency, cand.latency, thresholds.p99_ms, z, plan.min_samples, False),
        _quantile("ttft_p99", base.ttft, cand.ttft, thresholds.ttft_p99_ms, z, plan.min_samples, True),
        _cost(window, thresholds, plan.min_samples),
    )
    held_s = now - window.started_at
    result, critical, reason = decide(
        gates,
        requests_baseline=base.requests,
        requests_candidate=cand.requests,
        held_s=held_s,
        min_samples=plan.min_samples,
        min_step_s=plan.min_step_s,
    )
    return Verdict(
        result=result,
        critical=critical,
        reason=reason,
        gates=gates,
        step_started_at=window.started_at,
        evaluated_at=now,
        requests_baseline=base.requests,
        requests_candidate=cand.requests,
        min_samples=plan.min_samples,
        min_step_s=plan.min_step_s,
    )
