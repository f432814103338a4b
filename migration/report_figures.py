"""The numbers of the migration report (migration.report), read from the audit trail and nothing else.

- Confidence bounds: for the proportion gates, the rates the gate's own test has not
  ruled out at its level (migration.sequential, inverted: the largest rate it has shown
  the candidate to be above, the smallest it has shown it to be below), so the gate
  fails exactly when its threshold is under the lower bound and passes exactly when it
  is over the upper one; for means (cost, the quality gates' paired differences and
  win rate), the confidence sequence the gate reads; for the cost ratio, the two arms'
  sequences combined the way the gate combines them. tests/migration/test_report.py
  checks them against `gates.judge` on many inputs, so a test changed there without
  its bounds here is caught.
- Series over time: a gate's figure at every analysis tick, broken where a new step
  starts (a step's figures count from its own start). Long audits are thinned to
  `MAX_POINTS` ticks, the last one always kept.
- Per-arm latency: the verdicts record the baseline's p99 (`beside`) and the
  candidate's share of slow answers; the candidate's p99 is only in the gate's note,
  from which it is read back. p50 is in no audit record: the current step's p50 and
  p99 of both arms come from the gateway's own window of the step.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from migration.sequential import log_evidence, mean_half_width
from migration.types import ARMS
from migration.window import StepWindow

Entry = Mapping[str, Any]
T = TypeVar("T")
MAX_POINTS = 600
_EDGE = 1e-12
_P99_NOTE = re.compile(r"\bp99 ~(\d+(?:\.\d+)?) ms\b")


def epoch(entry: Entry) -> float | None:
    try:
        return datetime.fromisoformat(str(entry["time"])).timestamp()
    except (KeyError, ValueError):
        return None


def ticks_of(history: Sequence[Entry]) -> list[Entry]:
    return [e for e in history if e.get("kind") == "tick" and isinstance(e.get("verdict"), Mapping)
            and epoch(e) is not None]


def gate_of(verdict: Mapping[str, Any] | None, name: str, scope: str = "step") -> Mapping[str, Any] | None:
    for gate in (verdict or {}).get("gates", []):
        if gate.get("gate") == name and gate.get("scope", "step") == scope:
            return gate
    return None


def thin(ticks: Sequence[Entry], limit: int = MAX_POINTS) -> list[Entry]:
    if len(ticks) <= limit:
        return list(ticks)
    stride = len(ticks) / (limit - 1)
    picked = [ticks[min(len(ticks) - 1, round(i * stride))] for i in range(limit - 1)]
    return [*picked, ticks[-1]]


def _bisect(holds_low: Callable[[float], bool], low: float, high: float) -> float:
    """The edge between `low` (where holds_low is true) and `high` (where it is not), to ~1e-12."""
    for _ in range(42):
        middle = (low + high) / 2
        low, high = (middle, high) if holds_low(middle) else (low, middle)
    return (low + high) / 2


def proportion_bounds(n: int, k_fail: int, k_pass: int, alpha: float) -> tuple[float, float]:
    needed = math.log(1 / alpha)

    def above(theta: float) -> bool:
        return log_evidence(n, k_fail, theta, "above") >= needed

    def not_below(theta: float) -> bool:
        return log_evidence(n, k_pass, theta, "below") < needed

    lower = _bisect(above, _EDGE, 1 - _EDGE) if above(_EDGE) else 0.0
    upper = _bisect(not_below, _EDGE, 1 - _EDGE) if not not_below(1 - _EDGE) else 1.0
    return lower, upper


def _around(mean: float, n: int, variance: float, alpha: float, n_star: int) -> tuple[float, float] | None:
    width = mean_half_width(n, max(0.0, variance), alpha, n_star)
    return None if width is None else (mean - width, mean + width)


def confidence_bounds(gate: Mapping[str, Any]) -> tuple[float, float] | None:
    """(lower, upper) of the gate's figure at its level; None when its test gives none (or is unknown here)."""
    inputs = gate.get("inputs") or {}
    try:
        test, alpha = inputs.get("test"), float(gate["alpha"])
        if test in ("proportion", "optional_proportion"):
            n = int(inputs["n"])
            return proportion_bounds(n, int(inputs["k_fail"]), int(inputs["k_pass"]), alpha) if n else None
        if test == "mean":
            n, mean = int(inputs["n"]), inputs["mean"]
            if mean is None or n < int(inputs["n_star"]):
                return None
            return _around(mean, n, float(inputs["variance"] or 0.0), alpha, int(inputs["n_star"]))
        if test == "ratio":
            n_star, mean_c, mean_b = int(inputs["n_star"]), inputs["mean_candidate"], inputs["mean_baseline"]
            if mean_c is None or mean_b is None or mean_b <= 0:
                return None
            if min(int(inputs["n_candidate"]), int(inputs["n_baseline"])) < n_star:
                return None
            w_c = mean_half_width(int(inputs["n_candidate"]), float(inputs["variance_candidate"] or 0), alpha / 2,
                                  n_star)
            w_b = mean_half_width(int(inputs["n_baseline"]), float(inputs["variance_baseline"] or 0), alpha / 2,
                                  n_star)
            if w_c is None or w_b is None:
                return None
            upper = (mean_c + w_c) / (mean_b - w_b) - 1 if mean_b - w_b > 0 else math.inf
            return (mean_c - w_c) / (mean_b + w_b) - 1, upper
        if test == "paired_difference":
            n, worse, better = int(inputs["n"]), int(inputs["worse"]), int(inputs["better"])
            mean = (worse - better) / n if n else 0.0
            return _around(mean, n, (worse + better) / n - mean * mean if n else 0.0, alpha, int(inputs["n_star"]))
        if test == "win_rate":
            judged, wins, ties = int(inputs["judged"]), int(inputs["wins"]), int(inputs["ties"])
            if judged < int(inputs["min_n"]):
                return None
            mean = (wins + ties / 2) / judged
            return _around(mean, judged, (wins + ties / 4) / judged - mean * mean, alpha, int(inputs["min_n"]))
    except (KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


def _by_step(
    ticks: Sequence[Entry], gate: str, scope: str, read: Callable[[Mapping[str, Any]], T | None],
) -> tuple[tuple[tuple[float, T], ...], ...]:
    """(time, what `read` finds in the gate's figures) at every tick where it finds something, one segment a step
    (a block, for the block scope: each block is counted from its own start)."""
    segments: list[list[tuple[float, T]]] = []
    step: object = object()
    for tick in ticks:
        verdict = tick["verdict"]
        key = (verdict.get("step_started_at"), verdict.get("block") if scope == "block" else None)
        if key != step:
            step = key
            segments.append([])
        figures = gate_of(verdict, gate, scope)
        found = None if figures is None else read(figures)
        t = epoch(tick)
        if found is not None and t is not None:
            segments[-1].append((t, found))
    return tuple(tuple(s) for s in segments if s)


def series(
    ticks: Sequence[Entry], gate: str, scope: str, value: Callable[[Mapping[str, Any]], float | None],
) -> tuple[tuple[tuple[float, float], ...], ...]:
    """(time, value) of one gate's figure at every tick that has a finite one, in segments of one step each."""
    def finite(figures: Mapping[str, Any]) -> float | None:
        v = value(figures)
        return v if v is not None and math.isfinite(v) else None
    return _by_step(ticks, gate, scope, finite)


def band(ticks: Sequence[Entry], gate: str) -> tuple[tuple[tuple[float, float, float], ...], ...]:
    """The step-scope confidence bounds of one gate at every tick that has them, in segments of one step each."""
    found = _by_step(ticks, gate, "step", confidence_bounds)
    return tuple(tuple((t, lo, hi) for t, (lo, hi) in segment) for segment in found)


def estimate(gate: Mapping[str, Any]) -> float | None:
    value = gate.get("estimate")
    return float(value) if isinstance(value, int | float) else None


def beside(gate: Mapping[str, Any]) -> float | None:
    value = gate.get("beside")
    return float(value) if isinstance(value, int | float) else None


def noted_p99(gate: Mapping[str, Any]) -> float | None:
    """The candidate's p99 as the gate recorded it; from its note in audits written before it was recorded."""
    recorded = (gate.get("inputs") or {}).get("p99_ms")
    if isinstance(recorded, int | float):
        return float(recorded)
    found = _P99_NOTE.search(str(gate.get("note", "")))
    return float(found.group(1)) if found else None


def input_number(key: str) -> Callable[[Mapping[str, Any]], float | None]:
    def read(gate: Mapping[str, Any]) -> float | None:
        value = (gate.get("inputs") or {}).get(key)
        return float(value) if isinstance(value, int | float) else None
    return read


def arm_figures(local_window: Mapping[str, Any] | None) -> dict[str, dict[str, float | int | None]] | None:
    """Both arms of the current step as this gateway process counted them; None without a window."""
    if not local_window:
        return None
    try:
        window = StepWindow.from_dict(local_window)
    except (KeyError, TypeError, ValueError):
        return None
    figures: dict[str, dict[str, float | int | None]] = {}
    for name in ARMS:
        arm = window.arm(name)
        figures[name] = {
            "requests": arm.requests, "errors": arm.errors, "error_rate": arm.error_rate,
            "attempts": arm.attempts, "attempt_error_rate": arm.attempt_error_rate,
            "p50_ms": arm.latency.quantile(0.5), "p99_ms": arm.latency.quantile(0.99),
            "ttft_p50_ms": arm.ttft.quantile(0.5), "ttft_p99_ms": arm.ttft.quantile(0.99),
            "mean_cost_micros": arm.cost.mean(),
        }
    return figures


def pair_side(verdict: object) -> int:
    """0 the baseline's answer won, 1 the candidate's, 2 neither (a tie or an unreadable verdict)."""
    v = str(verdict).strip().lower()
    if v.startswith("baseline") or "loss" in v or v in ("lose", "worse"):
        return 0
    if v.startswith("candidate") or "win" in v or v == "better":
        return 1
    return 2


def divergent_pairs(pairs: Sequence[Entry], limit: int = 8) -> list[tuple[Entry, float]]:
    """Judged pairs, most divergent first: candidate losses, then wins, then the rest; least similar text first."""
    scored = [(e, difflib.SequenceMatcher(None, str(e.get("baseline", ""))[:2000],
                                          str(e.get("candidate", ""))[:2000]).ratio()) for e in pairs]
    scored.sort(key=lambda item: (pair_side(item[0].get("verdict")), item[1]))
    return scored[:limit]
