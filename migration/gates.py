"""Is the candidate good enough to advance, or bad enough to roll back? A step's windows -> a verdict.

Every gate asks one question of the candidate with an anytime-valid test
(migration.sequential), on two scopes: the whole step, and the step's current
recent block (`recent_window_s`), which catches a regression that starts late in
a long step. Each test answers

    fail          the candidate is over the threshold, shown at level alpha
    pass          the candidate is under the threshold, shown at level alpha
    inconclusive  neither has been shown yet

and stays honest however often it is asked. The gates:

- error_rate: errors per upstream attempt on the candidate's target (retries and
  shadow copies included; 429s counted apart, as capacity) against `error_rate`.
  The share of errors the arm's clients saw after retries and fallbacks is shown
  beside it.
- latency_p99, ttft_p99: "p99 is over T" is "more than 1 % of answers are slower
  than T", a proportion, tested on the successful requests of the arm as its clients
  waited for them (whole request; first event for streams). Histogram buckets decide
  conservatively: a sample counts as slower than T for failing only if its bucket
  starts at or above T, and as not slower for passing only if its bucket ends at or
  below T.
- cost: the mean relative increase of cost per request over the baseline, paired
  prompt by prompt when the window has shadowed pairs, else the ratio of the arms'
  mean costs (each arm's confidence sequence at alpha / 2), against `cost_increase`.
  The sequences for means are asymptotic, so a mean is judged only once it has
  `min_samples` values.
- critical_error_ratio: the candidate's error ratio per attempt at or above
  `critical_error_rate` over at least `critical_min_requests` attempts fails at once.

The verdict: any gate failing on either scope fails it, at any time (a test valid
under every look needs no minimum sample to fail). Advancing needs more: the
candidate has `min_samples` requests, the step has been held `min_step_s`, and every
gate passes on the whole step (the TTFT gate is skipped while streams are too few to
judge, unless they already fail it). Otherwise the verdict is inconclusive and says
what is missing. Each gate keeps the counts its test read (`inputs`), so every
verdict can be recomputed from its audit record alone (migration.verify).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from config.migration import GateThresholds, StepPlan
from migration.quality_gates import judge_paired_difference, judge_win_rate
from migration.sequential import block_alpha, log_evidence, mean_half_width
from migration.window import PPM, ArmWindow, StepWindow

Result = Literal["pass", "fail", "inconclusive"]
GateResult = Literal["pass", "fail", "inconclusive", "skipped"]
Scope = Literal["step", "block"]
QUANTILE = 0.99
# The confidence sequences of the quality gates are asymptotic: no fewer pairs are judged at all.
MIN_PAIRS_TO_FAIL = 30
# The share of answers a p99 lets be slower than its threshold (1 - 0.99 in floating point is not 0.01).
TAIL = 0.01


@dataclass(frozen=True, slots=True)
class GateFigures:
    gate: str
    scope: Scope
    # Exactly what the test read: `judge` recomputes the result from these and the next two fields.
    inputs: Mapping[str, Any]
    threshold: float
    alpha: float
    result: GateResult
    estimate: float | None
    # The same figure on the baseline arm, or as the arm's clients saw it, for the reader.
    beside: float | None
    note: str

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["inputs"] = dict(self.inputs)
        return data

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
    # The recent block judged beside the step: its number in the step (from 1) and its start.
    block: int = 1
    block_started_at: float | None = None

    @property
    def held_s(self) -> float:
        return self.evaluated_at - self.step_started_at

    def gate(self, name: str, scope: Scope = "step") -> GateFigures:
        return next(g for g in self.gates if g.gate == name and g.scope == scope)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gates"] = [g.to_dict() for g in self.gates]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        fields = dict(data)
        fields["gates"] = tuple(GateFigures.from_dict(g) for g in data["gates"])
        return cls(**fields)


# -- the tests, from their inputs alone -------------------------------------------------------------------------


def judge(kind: str, inputs: Mapping[str, Any], threshold: float, alpha: float) -> tuple[GateResult, float | None]:
    """(result, estimate) of one gate's test: how a verdict is computed, and recomputed from an audit record."""
    if kind == "proportion":
        return _judge_proportion(inputs, threshold, alpha)
    if kind == "optional_proportion":
        # Too few samples may fail the gate on clear evidence, but not hold the step.
        result, estimate = _judge_proportion(inputs, threshold, alpha)
        if int(inputs["n"]) < int(inputs["min_n"]) and result != "fail":
            return "skipped", estimate
        return result, estimate
    if kind == "mean":
        return _judge_mean(inputs, threshold, alpha)
    if kind == "ratio":
        return _judge_ratio(inputs, threshold, alpha)
    if kind == "paired_difference":
        return judge_paired_difference(inputs, threshold, alpha)
    if kind == "win_rate":
        return judge_win_rate(inputs, threshold, alpha)
    if kind == "critical":
        n, k = int(inputs["n"]), int(inputs["k"])
        if n < int(inputs["min_n"]):
            return "skipped", k / n if n else None
        return ("fail" if k / n >= threshold else "pass"), k / n
    raise ValueError(f"unknown gate test {kind!r}")


def _judge_proportion(inputs: Mapping[str, Any], theta: float, alpha: float) -> tuple[GateResult, float | None]:
    n, k_fail, k_pass = int(inputs["n"]), int(inputs["k_fail"]), int(inputs["k_pass"])
    if n == 0:
        return "inconclusive", None
    needed = math.log(1 / alpha)
    if log_evidence(n, k_fail, theta, "above") >= needed:
        return "fail", k_fail / n
    if log_evidence(n, k_pass, theta, "below") >= needed:
        return "pass", k_pass / n
    return "inconclusive", k_fail / n


def _judge_mean(inputs: Mapping[str, Any], threshold: float, alpha: float) -> tuple[GateResult, float | None]:
    n, mean = int(inputs["n"]), inputs["mean"]
    if n == 0 or mean is None:
        return "inconclusive", None
    # The confidence sequence is asymptotic: a mean of a handful of values is not judged at all.
    if n < int(inputs["n_star"]):
        return "inconclusive", mean
    width = mean_half_width(n, float(inputs["variance"] or 0.0), alpha, int(inputs["n_star"]))
    if width is None:
        return "inconclusive", mean
    if mean - width > threshold:
        return "fail", mean
    if mean + width < threshold:
        return "pass", mean
    return "inconclusive", mean


def _judge_ratio(inputs: Mapping[str, Any], threshold: float, alpha: float) -> tuple[GateResult, float | None]:
    """Relative increase of the candidate's mean over the baseline's, each mean's sequence at alpha / 2."""
    n_c, n_b, n_star = int(inputs["n_candidate"]), int(inputs["n_baseline"]), int(inputs["n_star"])
    mean_c, mean_b = inputs["mean_candidate"], inputs["mean_baseline"]
    if mean_c is None or mean_b is None or mean_b <= 0:
        return "skipped", None  # no cost on an arm, or a free baseline: a relative increase is undefined
    estimate = mean_c / mean_b - 1
    if min(n_c, n_b) < n_star:
        return "inconclusive", estimate
    width_c = mean_half_width(n_c, float(inputs["variance_candidate"] or 0.0), alpha / 2, n_star)
    width_b = mean_half_width(n_b, float(inputs["variance_baseline"] or 0.0), alpha / 2, n_star)
    if width_c is None or width_b is None:
        return "inconclusive", estimate
    if (mean_c - width_c) / (mean_b + width_b) - 1 > threshold:
        return "fail", estimate
    if mean_b - width_b > 0 and (mean_c + width_c) / (mean_b - width_b) - 1 < threshold:
        return "pass", estimate
    return "inconclusive", estimate


# -- the gates, from windows ---------------------------------------------------------------------------------------


def _figures(gate: str, scope: Scope, kind: str, inputs: dict[str, Any], threshold: float, alpha: float,
             beside: float | None, describe: str) -> GateFigures:
    inputs = {"test": kind, **inputs}
    result, estimate = judge(kind, inputs, threshold, alpha)
    return GateFigures(gate, scope, inputs, threshold, alpha, result, estimate, beside, f"{describe}: {result}")


def _critical(cand: ArmWindow, th: GateThresholds, scope: Scope, alpha: float) -> GateFigures:
    n, k = cand.attempts, cand.attempt_errors
    inputs = {"n": n, "k": k, "min_n": th.critical_min_requests}
    return _figures("critical_error_ratio", scope, "critical", inputs, th.critical_error_rate, alpha,
                    cand.error_rate, f"{k}/{n} attempts failed, critical at {th.critical_error_rate} over "
                    f">= {th.critical_min_requests}")


def _error_rate(cand: ArmWindow, th: GateThresholds, scope: Scope, alpha: float) -> GateFigures:
    n, k = cand.attempts, cand.attempt_errors
    seen = "no client requests" if not cand.requests else (
        f"clients saw {cand.errors}/{cand.requests} ({cand.errors / cand.requests:.2%})")
    describe = (f"{k}/{n} upstream attempts failed ({k / n:.2%})" if n else "no upstream attempts") + (
        f"; {seen}; 429s apart: {cand.attempt_rate_limited} attempts, {cand.rate_limited} requests")
    return _figures("error_rate", scope, "proportion", {"n": n, "k_fail": k, "k_pass": k}, th.error_rate, alpha,
                    cand.error_rate, describe)


def _quantile(gate: str, base: ArmWindow, cand: ArmWindow, threshold_ms: float, scope: Scope, alpha: float,
              optional: bool, min_samples: int) -> GateFigures:
    histogram = cand.ttft if gate == "ttft_p99" else cand.latency
    baseline = (base.ttft if gate == "ttft_p99" else base.latency).quantile(QUANTILE)
    n = histogram.total
    surely, possibly = histogram.above(threshold_ms)
    p99 = histogram.quantile(QUANTILE)
    describe = (f"p99 ~{p99:.0f} ms over {n} answers; {surely}-{possibly} slower than {threshold_ms:g} ms"
                if p99 is not None else "no answers")
    # Streams can be a small share of traffic: too few TTFT samples may fail a step on clear evidence,
    # but must not hold it.
    # The quantiles ride along for the reader (the report charts them); the test reads only n and the counts.
    kind, inputs = "proportion", {"n": n, "k_fail": surely, "k_pass": possibly, "p50_ms": histogram.quantile(0.5),
                                  "p99_ms": p99}
    if optional:
        kind, inputs = "optional_proportion", {**inputs, "min_n": min_samples}
    return _figures(gate, scope, kind, inputs, TAIL, alpha, baseline, describe)


def _cost(base: ArmWindow, cand: ArmWindow, th: GateThresholds, scope: Scope, alpha: float,
          n_star: int) -> GateFigures:
    pairs = cand.pairs
    if pairs.count:
        # Shadowed prompts answered by both arms: compare like with like.
        mean, variance = pairs.mean(), pairs.variance()
        inputs = {"n": pairs.count, "mean": None if mean is None else mean / PPM,
                  "variance": None if variance is None else variance / (PPM * PPM), "n_star": n_star}
        return _figures("cost", scope, "mean", inputs, th.cost_increase, alpha, None,
                        f"paired increase over {pairs.count} shadowed prompts")
    mean_b, mean_c = base.cost.mean(), cand.cost.mean()
    inputs = {
        "n_candidate": cand.cost.count, "mean_candidate": mean_c, "variance_candidate": cand.cost.variance(),
        "n_baseline": base.cost.count, "mean_baseline": mean_b, "variance_baseline": base.cost.variance(),
        "n_star": n_star,
    }
    describe = ("no cost on both arms, or a free baseline" if mean_b is None or mean_c is None or mean_b == 0
                else f"mean cost {mean_c:.0f} vs {mean_b:.0f} micro-USD")
    return _figures("cost", scope, "ratio", inputs, th.cost_increase, alpha, mean_b, describe)


def _checks(gate: str, base: ArmWindow, cand: ArmWindow, th: GateThresholds, scope: Scope, alpha: float,
            min_samples: int) -> GateFigures:
    q = cand.quality
    settings = th.quality
    kind, margin = ("json", settings.json_margin) if gate == "quality_json" else ("tools", settings.tool_call_margin)
    n, worse, better = (q.json_pairs, q.json_worse, q.json_better) if kind == "json" else (
        q.tool_pairs, q.tools_worse, q.tools_better)
    invalid, expected = ("json_invalid", "json_expected") if kind == "json" else ("tools_invalid", "tool_answers")
    rate_c, rate_b = q.rate(invalid, expected), base.quality.rate(invalid, expected)
    inputs = {"n": n, "worse": worse, "better": better, "min_n": min_samples, "n_star": min_samples,
              "min_n_fail": MIN_PAIRS_TO_FAIL,
              "invalid_candidate": getattr(q, invalid), "expected_candidate": getattr(q, expected),
              "invalid_baseline": getattr(base.quality, invalid), "expected_baseline": getattr(base.quality, expected)}
    describe = (f"{worse} pairs only the candidate failed, {better} only the baseline, of {n}" if n
                else f"no pair with both answers checked for {kind}")
    return _figures(gate, scope, "paired_difference", inputs, margin, alpha, rate_b,
                    describe + (f"; invalid {rate_c:.1%} vs {rate_b or 0:.1%}" if rate_c is not None else ""))


def _win_rate(cand: ArmWindow, th: GateThresholds, scope: Scope, alpha: float) -> GateFigures:
    q, settings = cand.quality, th.quality
    inputs = {"judged": q.judged, "wins": q.wins, "ties": q.ties, "losses": q.losses, "flips": q.flips,
              "noise_pairs": q.noise_pairs, "noise_decisive": q.noise_decisive, "min_n": settings.min_judged,
              "min_noise_pairs": settings.min_noise_pairs, "max_noise_floor": settings.max_noise_floor}
    noise = q.noise_decisive / q.noise_pairs if q.noise_pairs else None
    describe = (f"{q.wins} wins, {q.ties} ties ({q.flips} flipped with the order), {q.losses} losses of {q.judged}"
                f"; noise floor {'unmeasured' if noise is None else f'{noise:.0%} of {q.noise_pairs}'}")
    return _figures("quality_win_rate", scope, "win_rate", inputs, 0.5 - settings.win_rate_margin, alpha, noise,
                    describe)


def _gates(window: StepWindow, th: GateThresholds, plan: StepPlan, scope: Scope, alpha: float) -> list[GateFigures]:
    base, cand = window.baseline, window.candidate
    gates = [
        _critical(cand, th, scope, alpha),
        _error_rate(cand, th, scope, alpha),
        _quantile("latency_p99", base, cand, th.p99_ms, scope, alpha, False, plan.min_samples),
        _quantile("ttft_p99", base, cand, th.ttft_p99_ms, scope, alpha, True, plan.min_samples),
        _cost(base, cand, th, scope, alpha, plan.min_samples),
        _checks("quality_json", base, cand, th, scope, alpha, plan.min_samples),
        _checks("quality_tools", base, cand, th, scope, alpha, plan.min_samples),
    ]
    if th.quality.judge is not None:
        gates.append(_win_rate(cand, th, scope, alpha))
    return gates


def decide(
    gates: Sequence[GateFigures],
    *,
    requests_candidate: int,
    held_s: float,
    min_samples: int,
    min_step_s: float,
) -> tuple[Result, bool, str]:
    """(result, critical, reason) from the gate figures and the step's minimums for advancing."""
    critical = [g for g in gates if g.gate == "critical_error_ratio" and g.result == "fail"]
    if critical:
        return "fail", True, f"critical ({critical[0].scope}): {critical[0].note}"
    failed = [f"{g.gate} ({g.scope}): {g.note}" for g in gates if g.result == "fail"]
    if failed:
        return "fail", False, "; ".join(failed)
    missing = []
    if requests_candidate < min_samples:
        missing.append(f"candidate has {requests_candidate}/{min_samples} samples")
    if held_s < min_step_s:
        missing.append(f"step held {held_s:.0f} s of {min_step_s:.0f} s")
    if missing:
        return "inconclusive", False, "; ".join(missing)
    unsure = [f"{g.gate}: {g.note}" for g in gates if g.scope == "step" and g.result == "inconclusive"]
    if unsure:
        return "inconclusive", False, "; ".join(unsure)
    return "pass", False, "all gates pass"


def evaluate(
    window: StepWindow, thresholds: GateThresholds, plan: StepPlan, now: float,
    block: StepWindow | None = None, block_index: int = 1, block_started_at: float | None = None,
) -> Verdict:
    """Judge the step's window at `now` (the same clock as `window.started_at`) and, beside it, the step's
    current recent block (`block`, the `block_index`-th of the step; the whole step when not given)."""
    alpha = thresholds.alpha
    gates = _gates(window, thresholds, plan, "step", alpha)
    if block is not None:
        gates += [g for g in _gates(block, thresholds, plan, "block", block_alpha(alpha, block_index))
                  if g.gate != "critical_error_ratio"]
    held_s = now - window.started_at
    result, critical, reason = decide(
        gates, requests_candidate=window.candidate.requests, held_s=held_s, min_samples=plan.min_samples,
        min_step_s=plan.min_step_s,
    )
    return Verdict(
        result=result,
        critical=critical,
        reason=reason,
        gates=tuple(gates),
        step_started_at=window.started_at,
        evaluated_at=now,
        requests_baseline=window.baseline.requests,
        requests_candidate=window.candidate.requests,
        min_samples=plan.min_samples,
        min_step_s=plan.min_step_s,
        block=block_index,
        block_started_at=block_started_at,
    )
