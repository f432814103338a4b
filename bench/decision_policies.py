"""The policies the decision benchmark compares, each fed the same ticks (decision_streams).

- `Cutover`: the gateway's controller loop with its real pure functions: windows
  (migration.window), gates (migration.gates) and the state machine (migration.rollout),
  ticking every `interval_s` of a simulated clock, recent blocks as migration.blocks
  cuts them. One shortcut, which changes no outcome (tests/bench/test_decisions.py
  checks it against the plain loop): a tick on which the state machine can only stay
  where it is (no failed check counted, the step younger than `min_step_s`, or the
  safety window not over) is not judged when no gate's figure is over its threshold on
  either scope, since none of the tests can then say "fail".
- `Fixed`: how common canary tools judge: every interval, that interval's own error
  rate, p99 and cost against the thresholds, no minimum sample; `k` failed checks in a
  row roll back; otherwise each step lasts `min_step_s`, and the checks go on through
  the safety window after promotion.
- `Plain`: the gates this gateway had before: a fixed-sample bound checked at every
  tick (Wilson lower bound fails, the point estimate passes), nothing judged before
  `min_samples` on both arms and `min_step_s`, only a request's final attempt counted,
  failures counted per step, and after promotion only the critical guard.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from decision_streams import (
    ATTEMPT_ERRORS,
    ATTEMPTS,
    COST_N,
    COST_SUM,
    ERRORS,
    PAIR_N,
    PAIR_SUM,
    REQUESTS,
    Counts,
    Scenario,
    Tick,
)

from config.migration import BASIS_POINTS, GateThresholds, StepPlan
from migration.gates import evaluate
from migration.rollout import MigrationState, Promote, PromoteFully, Start, StartWindow, expects_tick, transition
from migration.rollout import Tick as TickEvent
from migration.window import PPM, ArmWindow, Histogram, StepWindow, bucket_bounds

Final = Literal["rolled_back", "promoted", "held"]


@dataclass(slots=True)
class Outcome:
    final: Final = "held"
    at_s: float | None = None
    requests: int = 0
    # Whether the candidate ever served everything.
    promoted: bool = False
    done: bool = False


def view(tick: Tick, phase: str, weight_bp: int) -> tuple[Counts, Counts]:
    """(baseline, candidate) of one interval as the migration's phase sees it."""
    if phase == "shadow":
        return tick.baseline_live, tick.shadow
    if weight_bp >= BASIS_POINTS or phase == "promoted":
        return tick.baseline_copies, tick.live_copied
    return tick.baseline_live, tick.live


def starting_state(start: str, plan: StepPlan) -> MigrationState:
    state, _ = transition(MigrationState(), Start(0.0), plan)
    if start == "canary":
        state, _ = transition(state, Promote(0.0), plan)
    elif start == "last":
        for _ in range(len(plan.weights)):
            state, _ = transition(state, Promote(0.0), plan)
    elif start == "promoted":
        state, _ = transition(state, PromoteFully(0.0), plan)
    return state


def over_a_threshold(base: Counts, cand: Counts, gates: GateThresholds) -> bool:
    """Is any gate's figure over its threshold? If not, no gate can fail (see the module docstring)."""
    b, c = base.scalars, cand.scalars
    if c[ATTEMPTS] and c[ATTEMPT_ERRORS] / c[ATTEMPTS] > gates.error_rate:
        return True
    slower, answers = cand.maybe_slower(gates.p99_ms)
    if answers and slower / answers > 0.01:
        return True
    if c[PAIR_N]:
        return bool(c[PAIR_SUM] / c[PAIR_N] / PPM > gates.cost_increase)
    if c[COST_N] and b[COST_N] and b[COST_SUM]:
        return bool((c[COST_SUM] / c[COST_N]) / (b[COST_SUM] / b[COST_N]) - 1 > gates.cost_increase)
    return False


class Cutover:
    name = "cutover"

    def __init__(self, scenario: Scenario, plan: StepPlan, gates: GateThresholds, shortcut: bool = True) -> None:
        self.plan, self.gates, self.shortcut = plan, gates, shortcut
        self.state = starting_state(scenario.start, plan)
        self.outcome = Outcome(promoted=self.state.phase == "promoted")
        self._new_step(self.state.step_started_at or 0.0)

    def _new_step(self, started_at: float) -> None:
        self.started_at = started_at
        self.base, self.cand = Counts.zero(), Counts.zero()
        # The recent block, cut as migration.blocks.current_block cuts it on every tick.
        self.block_index, self.block_started = 1, started_at
        self.block_base, self.block_cand = Counts.zero(), Counts.zero()

    def step(self, t: float, tick: Tick) -> None:
        state = self.state
        if not expects_tick(state):
            self._finish(t)
            return
        self.outcome.requests += tick.n
        base, cand = view(tick, state.phase, state.candidate_weight_bp)
        self.base.add(base)
        self.cand.add(cand)
        if t - self.block_started >= self.plan.recent_window_s:
            self.block_index, self.block_started = self.block_index + 1, t
            self.block_base, self.block_cand = self.base.copy(), self.cand.copy()
        if self.shortcut and self._changes_nothing(t):
            return
        window = StepWindow(self.started_at, self.base.window(), self.cand.window())
        block = StepWindow(self.started_at, self.base.minus(self.block_base).window(),
                           self.cand.minus(self.block_cand).window())
        verdict = evaluate(window, self.gates, self.plan, t, block, self.block_index, self.block_started)
        self.state, actions = transition(state, TickEvent(verdict, t), self.plan)
        for action in actions:
            if isinstance(action, StartWindow):
                self._new_step(action.started_at)
        if self.state.phase == "promoted":
            self.outcome.promoted = True
        if not expects_tick(self.state):
            self._finish(t)

    def _changes_nothing(self, t: float) -> bool:
        state, held = self.state, t - self.started_at
        can_only_stay = state.consecutive_failures == 0 and (
            held < self.plan.safety_window_s if state.phase == "promoted" else held < self.plan.min_step_s)
        return can_only_stay and not (
            over_a_threshold(self.base, self.cand, self.gates)
            or over_a_threshold(self.base.minus(self.block_base), self.cand.minus(self.block_cand), self.gates))

    def _finish(self, t: float) -> None:
        phase = self.state.phase
        self.outcome.final = "rolled_back" if phase == "rolled_back" else "promoted" if phase == "promoted" else "held"
        self.outcome.at_s, self.outcome.done = t, True


class _Stepper:
    """Steps of `min_step_s`: shadow, the canary weights, promoted, then the safety window."""

    def __init__(self, scenario: Scenario, plan: StepPlan) -> None:
        self.plan = plan
        self.steps: list[tuple[str, int]] = [("shadow", 0)] + [("canary", w) for w in plan.weights_bp]
        self.index = {"start": 0, "canary": 1, "last": len(self.steps) - 1, "promoted": len(self.steps)}[
            scenario.start]
        self.started = 0.0
        self.outcome = Outcome(promoted=scenario.start == "promoted")

    @property
    def phase(self) -> tuple[str, int]:
        return self.steps[self.index] if self.index < len(self.steps) else ("promoted", BASIS_POINTS)

    @property
    def promoted(self) -> bool:
        return self.index >= len(self.steps)

    def advance(self, t: float) -> bool:
        """The next step once this one has lasted its time; True when it moved."""
        held = t - self.started
        if self.promoted:
            if held >= self.plan.safety_window_s:
                self.finish("promoted", t)
            return False
        if held < self.plan.min_step_s:
            return False
        self.index, self.started = self.index + 1, t
        self.outcome.promoted = self.promoted
        return True

    def finish(self, final: Final, t: float) -> None:
        self.outcome.final, self.outcome.at_s, self.outcome.done = final, t, True


class Fixed(_Stepper):
    def __init__(self, scenario: Scenario, plan: StepPlan, gates: GateThresholds, failures: int) -> None:
        super().__init__(scenario, plan)
        self.name = f"fixed x{failures}"
        self.gates, self.failures, self.failed = gates, failures, 0

    def step(self, t: float, tick: Tick) -> None:
        if self.outcome.done:
            return
        self.outcome.requests += tick.n
        base, cand = view(tick, *self.phase)
        c = cand.scalars
        bad = bool(c[ATTEMPTS] and c[ATTEMPT_ERRORS] / c[ATTEMPTS] > self.gates.error_rate) or bool(
            tick.n and tick.slow / tick.n > 0.01) or _cost_over(base, cand, self.gates.cost_increase)
        self.failed = self.failed + 1 if bad else 0
        if self.failed >= self.failures:
            self.finish("rolled_back", t)
        else:
            self.advance(t)


def _cost_over(base: Counts, cand: Counts, limit: float) -> bool:
    b, c = base.scalars, cand.scalars
    if c[PAIR_N]:
        return bool(c[PAIR_SUM] / c[PAIR_N] / PPM > limit)
    return bool(c[COST_N] and b[COST_N] and (c[COST_SUM] / c[COST_N]) / (b[COST_SUM] / b[COST_N]) - 1 > limit)


class Plain(_Stepper):
    name = "plain bound"

    def __init__(self, scenario: Scenario, plan: StepPlan, gates: GateThresholds) -> None:
        super().__init__(scenario, plan)
        self.gates, self.failed, self.z = gates, 0, 2.576
        self.base, self.cand = Counts.zero(), Counts.zero()

    def step(self, t: float, tick: Tick) -> None:
        if self.outcome.done:
            return
        self.outcome.requests += tick.n
        phase, weight = self.phase
        base, cand = view(tick, phase, weight)
        final = cand.copy()
        # Only a request's final attempt reached the arm: it failed only when its retry failed too.
        s = final.scalars
        s[ERRORS] = s[ATTEMPT_ERRORS] - (s[ATTEMPTS] - s[REQUESTS]) if phase != "shadow" else s[ATTEMPT_ERRORS]
        self.base.add(base)
        self.cand.add(final)
        result = self._verdict(t - self.started)
        if result == "critical":
            self.finish("rolled_back", t)
        elif self.promoted:
            self.advance(t)  # after promotion only the critical guard; the safety window settles
        elif result == "fail":
            self.failed += 1
            if self.failed >= self.plan.consecutive_failures:
                self.finish("rolled_back", t)
        elif result == "pass":
            self.failed = 0
            if self.advance(t):
                self.base, self.cand, self.failed = Counts.zero(), Counts.zero(), 0

    def _verdict(self, held_s: float) -> str:
        g, plan = self.gates, self.plan
        b, c = self.base.scalars, self.cand.scalars
        if c[REQUESTS] >= g.critical_min_requests and c[ERRORS] / c[REQUESTS] >= g.critical_error_rate:
            return "critical"
        if self.promoted or b[REQUESTS] < plan.min_samples or c[REQUESTS] < plan.min_samples or (
                held_s < plan.min_step_s):
            return "inconclusive"
        base, cand = self.base.window(), self.cand.window()
        results = [
            _judge(cand.errors / cand.requests, _wilson_lower(cand.errors, cand.requests, self.z), g.error_rate),
            _judge_p99(cand.latency, g.p99_ms, self.z),
            _judge_cost(base, cand, g.cost_increase, self.z),
        ]
        return "fail" if "fail" in results else "inconclusive" if "inconclusive" in results else "pass"


def _judge(estimate: float, bound: float | None, threshold: float) -> str:
    if bound is not None and bound > threshold:
        return "fail"
    return "pass" if estimate <= threshold else "inconclusive"


def _wilson_lower(errors: int, n: int, z: float) -> float:
    p, z2 = errors / n, z * z
    centre = p + z2 / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z2 / n))


def _judge_p99(histogram: Histogram, threshold: float, z: float) -> str:
    total = histogram.total
    if total == 0:
        return "inconclusive"
    estimate = histogram.quantile(0.99) or 0.0
    bound, above = 0.0, 0
    for index, count in reversed(histogram.counts):
        above += count
        if _wilson_lower(above, total, z) > 0.01:
            bound = bucket_bounds(index)[0]
            break
    return _judge(estimate, bound, threshold)


def _judge_cost(base: ArmWindow, cand: ArmWindow, limit: float, z: float) -> str:
    pairs = cand.pairs
    if pairs.count:
        mean, se = pairs.mean(), pairs.standard_error()
        if mean is None:
            return "inconclusive"
        return _judge(mean / PPM, None if se is None else (mean - z * se) / PPM, limit)
    mean_b, mean_c = base.cost.mean(), cand.cost.mean()
    if not mean_b or not mean_c:
        return "pass"
    ratio = mean_c / mean_b
    se_b, se_c = base.cost.standard_error(), cand.cost.standard_error()
    bound = None if se_b is None or se_c is None else ratio - 1 - z * ratio * math.hypot(se_c / mean_c, se_b / mean_b)
    return _judge(ratio - 1, bound, limit)
