"""The tests of the quality gates, from their inputs alone (pure; migration.gates builds their figures).

- paired_difference: pairs of answers to one request, each answer passing or failing a cheap check.
  A pair where only the candidate fails is +1, only the baseline -1, else 0; the mean is the
  candidate's failure rate minus the baseline's. It fails when that is confidently above the
  margin and passes when confidently below, with the same time-uniform confidence sequence as the
  cost gate. Too few pairs may fail the step on clear evidence but not hold it ("skipped").
- win_rate: each judged pair scores the candidate 1 (win), 0.5 (tie, or a judgement that flipped
  with the order of the answers) or 0 (loss). It fails when the mean is confidently below
  0.5 - margin and passes when confidently above it. Noise cannot fake a failure (the answers'
  order is balanced, so a judge that cannot tell answers apart averages 0.5) but it can hide one,
  so passing also needs the noise floor measured and under its maximum: how often the judge prefers
  one of two answers of the baseline model to the same request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from migration.sequential import mean_half_width

GateResult = Literal["pass", "fail", "inconclusive", "skipped"]


def judge_paired_difference(inputs: Mapping[str, Any], margin: float, alpha: float) -> tuple[GateResult, float | None]:
    n, worse, better = int(inputs["n"]), int(inputs["worse"]), int(inputs["better"])
    if n == 0:
        return "skipped", None
    mean = (worse - better) / n
    variance = max(0.0, (worse + better) / n - mean * mean)
    width = mean_half_width(n, variance, alpha, int(inputs["n_star"])) if n >= 2 else None
    if width is not None and n >= int(inputs["min_n_fail"]) and mean - width > margin:
        return "fail", mean
    if n < int(inputs["min_n"]):
        return "skipped", mean
    if width is not None and mean + width < margin:
        return "pass", mean
    return "inconclusive", mean


def judge_win_rate(inputs: Mapping[str, Any], floor: float, alpha: float) -> tuple[GateResult, float | None]:
    judged, wins, ties = int(inputs["judged"]), int(inputs["wins"]), int(inputs["ties"])
    if judged == 0:
        return "inconclusive", None
    mean = (wins + ties / 2) / judged
    variance = max(0.0, (wins + ties / 4) / judged - mean * mean)
    width = mean_half_width(judged, variance, alpha, int(inputs["min_n"]))
    if width is None or judged < int(inputs["min_n"]):
        return "inconclusive", mean
    if mean + width < floor:
        return "fail", mean
    noise_pairs = int(inputs["noise_pairs"])
    noisy = noise_pairs < int(inputs["min_noise_pairs"]) or (
        int(inputs["noise_decisive"]) / noise_pairs > float(inputs["max_noise_floor"]))
    if mean - width > floor and not noisy:
        return "pass", mean
    return "inconclusive", mean
