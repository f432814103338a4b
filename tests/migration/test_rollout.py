"""The rollout state machine, driven by scripted events; then whole migrations against simulated traffic."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from statistics import NormalDist

import pytest
from pydantic import ValidationError

from config.migration import GateThresholds, MigrationSpec, StepPlan
from migration.gates import Verdict, evaluate
from migration.rollout import (
    Abort,
    Action,
    Event,
    MigrationState,
    Pause,
    Promote,
    PromoteFully,
    RecordAudit,
    RejectedEvent,
    Resume,
    Retry,
    Rollback,
    SetWeight,
    SetWeights,
    Start,
    StartWindow,
    StopShadow,
    Tick,
    expects_tick,
    transition,
)
from migration.window import ArmWindow, Histogram, Sample, StepWindow, Sums, bucket_index, merge

PLAN = StepPlan(min_step_s=300, max_step_s=3000, min_samples=200, safety_window_s=600)
GATES = GateThresholds()


def verdict(result: str, state: MigrationState, now: float, critical: bool = False) -> Verdict:
    """A verdict about the state's current step (any step when it has none)."""
    return Verdict(
        result=result,  # type: ignore[arg-type]
        critical=critical,
        reason=f"scripted {result}",
        gates=(),
        step_started_at=state.step_started_at or 0.0,
        evaluated_at=now,
        requests_baseline=500,
        requests_candidate=500,
        min_samples=PLAN.min_samples,
        min_step_s=PLAN.min_step_s,
    )


def tick(state: MigrationState, result: str, now: float, critical: bool = False) -> tuple[MigrationState, tuple]:
    return transition(state, Tick(verdict(result, state, now, critical), now), PLAN)


def run(state: MigrationState, *events: Event) -> MigrationState:
    for event in events:
        state, _ = transition(state, event, PLAN)
    return state


def started() -> MigrationState:
    return run(MigrationState(), Start(0.0))


def canary(step: int) -> MigrationState:
    state = started()
    for i in range(step + 1):
        state = run(state, Promote(float(i + 1)))
    return state


def promoted() -> MigrationState:
    return run(started(), PromoteFully(10.0))


def settled() -> MigrationState:
    state = promoted()
    state, _ = tick(state, "pass", 10.0 + PLAN.safety_window_s)
    return state


def rolled_back() -> MigrationState:
    return run(canary(1), Rollback("alice", "latency complaints"))


STATES: dict[str, Callable[[], MigrationState]] = {
    "pending": MigrationState,
    "shadow": started,
    "canary": lambda: canary(1),
    "promoted": promoted,
    "settled": settled,
    "paused": lambda: run(canary(1), Pause("alice", "looking")),
    "paused_promoted": lambda: run(promoted(), Pause("alice", "looking")),
    "rolled_back": rolled_back,
    "aborted": lambda: run(started(), Abort("alice", "wrong model")),
}

RUNNING = {"Tick", "Pause", "Promote", "PromoteFully", "Abort", "Rollback", "SetWeight"}
ALLOWED: dict[str, set[str]] = {
    "pending": {"Start", "Abort"},
    "shadow": RUNNING,
    "canary": RUNNING,
    "promoted": {"Tick", "Pause", "Abort", "Rollback", "SetWeight"},
    "settled": {"Rollback"},
    "paused": {"Resume", "Promote", "PromoteFully", "Abort", "Rollback", "SetWeight"},
    "paused_promoted": {"Resume", "Abort", "Rollback", "SetWeight"},
    "rolled_back": {"Retry", "Abort"},
    "aborted": set(),
}


def make_event(kind: str, state: MigrationState) -> Event:
    now = (state.step_started_at or 0.0) + 1.0
    events: dict[str, Callable[[], Event]] = {
        "Start": lambda: Start(now),
        "Tick": lambda: Tick(verdict("inconclusive", state, now), now),
        "Pause": lambda: Pause("bob", "why not"),
        "Resume": lambda: Resume(now),
        "Promote": lambda: Promote(now),
        "PromoteFully": lambda: PromoteFully(now),
        "Abort": lambda: Abort("bob", "why not"),
        "Rollback": lambda: Rollback("bob", "why not"),
        "SetWeight": lambda: SetWeight(1234, now),
        "Retry": lambda: Retry(now),
    }
    return events[kind]()


EVENT_KINDS = ["Start", "Tick", "Pause", "Resume", "Promote", "PromoteFully", "Abort", "Rollback", "SetWeight", "Retry"]


@pytest.mark.parametrize("kind", EVENT_KINDS)
@pytest.mark.parametrize("name", list(STATES))
def test_every_phase_accepts_exactly_its_events(name: str, kind: str) -> None:
    state = STATES[name]()
    event = make_event(kind, state)
    if kind in ALLOWED[name]:
        new, actions = transition(state, event, PLAN)
        if new is not state:
            assert new.version == state.version + 1
            assert sum(isinstance(a, RecordAudit) for a in actions) == 1
    else:
        with pytest.raises(RejectedEvent, match=rf"^{kind} rejected in phase {state.phase}"):
            transition(state, event, PLAN)


def only(actions: tuple[Action, ...], kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


# Scripted transitions --------------------------------------------------------------


def test_start_enters_shadow() -> None:
    state, actions = transition(MigrationState(), Start(100.0, "alice"), PLAN)
    assert (state.phase, state.candidate_weight_bp, state.shadow_percent, state.version) == ("shadow", 0, 10.0, 1)
    assert state.shadow_to == "candidate" and state.auto_analysis
    assert actions[:2] == (SetWeights(0, 10.0, "candidate"), StartWindow(100.0))
    assert only(actions, RecordAudit)[0].to_dict()["actor"] == "alice"


def test_start_without_shadow_goes_straight_to_canary() -> None:
    plan = StepPlan(shadow_percent=0, min_step_s=300, max_step_s=3000)
    state, _ = transition(MigrationState(), Start(0.0), plan)
    assert (state.phase, state.step_index, state.candidate_weight_bp) == ("canary", 0, 2500)


def test_full_promotion_walks_every_phase_in_order() -> None:
    def routing(s: MigrationState) -> tuple:
        return s.phase, s.step_index, s.candidate_weight_bp, s.shadow_percent, s.shadow_to

    state, now = started(), 0.0
    seen = [routing(state)]
    while expects_tick(state):
        now += PLAN.interval_s
        state, actions = tick(state, "pass", now)
        if actions:
            seen.append(routing(state))
    assert seen == [
        ("shadow", 0, 0, 10.0, "candidate"),
        ("canary", 0, 2500, 0.0, "baseline"),
        ("canary", 1, 5000, 0.0, "baseline"),
        ("canary", 2, 7500, 0.0, "baseline"),
        # At 100 % the old baseline keeps an arm through the post-promotion copy.
        ("canary", 3, 10000, 5.0, "baseline"),
        ("promoted", 0, 10000, 5.0, "baseline"),
        ("promoted", 0, 10000, 0.0, "baseline"),
    ]
    assert state.settled and state.version == 7
    assert now == pytest.approx(5 * PLAN.min_step_s + PLAN.safety_window_s)


def test_pass_before_the_minimum_hold_does_not_advance() -> None:
    state = started()
    new, actions = tick(state, "pass", PLAN.min_step_s - 1)
    assert new is state and actions == ()


def test_advance_starts_a_new_window_and_records_the_verdict() -> None:
    _, actions = tick(started(), "pass", 300.0)
    assert actions[0] == SetWeights(2500, 0.0, "baseline")
    assert StopShadow() in actions and StartWindow(300.0) in actions
    audit = only(actions, RecordAudit)[0]
    assert (audit.event, audit.actor, audit.from_phase, audit.to_phase) == ("Tick", "gates", "shadow", "canary")
    assert audit.verdict is not None and audit.verdict["result"] == "pass"
    assert json.loads(json.dumps(audit.to_dict(), allow_nan=False))["to_phase"] == "canary"


def test_consecutive_failures_roll_back() -> None:
    state = canary(1)
    t = state.step_started_at or 0.0
    state, _ = tick(state, "fail", t + 400)
    state, _ = tick(state, "inconclusive", t + 410)  # neither resets nor counts
    state, actions = tick(state, "fail", t + 420)
    assert (state.phase, state.consecutive_failures) == ("canary", 2)
    assert "check failed (2/3)" in state.reason
    state, actions = tick(state, "fail", t + 430)
    assert (state.phase, state.candidate_weight_bp, state.shadow_percent) == ("rolled_back", 0, 0.0)
    assert actions[0] == SetWeights(0, 0.0, "baseline")
    assert state.reason.startswith("3 consecutive failed checks")


def test_a_pass_resets_the_failure_count() -> None:
    state = canary(0)
    t = state.step_started_at or 0.0
    state, _ = tick(state, "fail", t + 10)
    state, _ = tick(state, "fail", t + 20)
    state, actions = tick(state, "pass", t + 30)  # not held long enough to advance
    assert (state.phase, state.consecutive_failures) == ("canary", 0)
    assert len(actions) == 1  # the audit record only
    state, _ = tick(state, "fail", t + 40)
    assert state.phase == "canary"


def test_critical_rolls_back_at_once_and_stops_the_shadow() -> None:
    state, actions = tick(started(), "fail", 5.0, critical=True)
    assert state.phase == "rolled_back"
    assert actions[:2] == (SetWeights(0, 0.0, "baseline"), StopShadow())
    assert state.reason == "rolled back at once: scripted fail"


def test_promoted_rolls_back_only_on_critical() -> None:
    state = promoted()
    same, actions = tick(state, "fail", 20.0)
    assert same is state and actions == ()
    state, _ = tick(state, "fail", 30.0, critical=True)
    assert state.phase == "rolled_back"


def test_inconclusive_past_max_step_pauses_then_resume_restarts_the_step() -> None:
    state = canary(2)
    t = state.step_started_at or 0.0
    same, _ = tick(state, "inconclusive", t + PLAN.max_step_s - 1)
    assert same is state
    state, actions = tick(state, "inconclusive", t + PLAN.max_step_s)
    assert state.phase == "paused" and not state.auto_analysis
    assert state.reason == "inconclusive after 3000 s (max_step_s 3000): scripted inconclusive"
    assert only(actions, SetWeights) == []  # traffic stays as it was
    with pytest.raises(RejectedEvent, match="Tick rejected in phase paused"):
        tick(state, "pass", t + 5000)
    state, actions = transition(state, Resume(t + 6000), PLAN)
    assert (state.phase, state.step_index, state.candidate_weight_bp) == ("canary", 2, 7500)
    assert StartWindow(t + 6000) in actions


def test_a_pause_records_who_paused_and_a_resume_clears_it() -> None:
    t = (canary(2).step_started_at or 0.0) + PLAN.max_step_s
    by_gates, _ = tick(canary(2), "inconclusive", t)
    by_operator, _ = transition(canary(2), Pause("dave", "weekend"), PLAN)
    by_weight, _ = transition(by_gates, SetWeight(3000, t + 1, "carol"), PLAN)
    assert (by_gates.paused_by, by_operator.paused_by, by_weight.paused_by) == ("gates", "dave", "carol")
    resumed, _ = transition(by_gates, Resume(t + 2), PLAN)
    assert resumed.paused_by == ""
    # Kept with the state, so an alert on it survives a restart.
    assert MigrationState.from_dict(json.loads(json.dumps(by_gates.to_dict()))).paused_by == "gates"
    # A state stored before the field existed still loads.
    older = {k: v for k, v in by_operator.to_dict().items() if k != "paused_by"}
    assert MigrationState.from_dict(older).paused_by == ""
    # And one stored by a newer version, with a field this one does not know, loads too.
    newer = {**by_operator.to_dict(), "a_field_from_the_future": 1}
    assert MigrationState.from_dict(newer) == by_operator


def test_stale_verdict_is_rejected() -> None:
    state = canary(0)
    old = verdict("fail", started(), 400.0)
    with pytest.raises(RejectedEvent, match=r"verdict is about the step started at 0\.0, not 1\.0"):
        transition(state, Tick(old, 400.0), PLAN)


def test_manual_weight_pauses_and_resume_restores_the_plan() -> None:
    state, actions = transition(canary(1), SetWeight(3000, 50.0, "carol"), PLAN)
    assert (state.phase, state.candidate_weight_bp, state.auto_analysis) == ("paused", 3000, False)
    assert actions[0] == SetWeights(3000, 0.0, "baseline")
    state, _ = transition(state, SetWeight(100, 60.0), PLAN)
    assert state.candidate_weight_bp == 100 and state.paused_from is not None
    state, actions = transition(state, Resume(70.0), PLAN)
    assert (state.phase, state.step_index, state.candidate_weight_bp) == ("canary", 1, 5000)
    assert actions[0] == SetWeights(5000, 0.0, "baseline")


def test_promote_from_paused_moves_past_the_paused_step() -> None:
    state = run(canary(3), Pause("dave", "weekend"), Promote(99.0))
    assert (state.phase, state.candidate_weight_bp, state.shadow_percent) == ("promoted", 10000, 5.0)
    assert state.step_started_at == 99.0


def test_promote_fully_from_shadow() -> None:
    state, actions = transition(started(), PromoteFully(7.0), PLAN)
    assert (state.phase, state.candidate_weight_bp, state.shadow_to) == ("promoted", 10000, "baseline")
    assert actions[0] == SetWeights(10000, 5.0, "baseline")


def test_abort_is_final() -> None:
    state, _ = transition(canary(2), Abort("erin", "vendor contract fell through"), PLAN)
    assert (state.phase, state.candidate_weight_bp) == ("aborted", 0)
    assert state.reason == "aborted by erin: vendor contract fell through"
    for kind in EVENT_KINDS:
        with pytest.raises(RejectedEvent):
            transition(state, make_event(kind, state), PLAN)


def test_rollback_from_promoted_then_retry_from_the_start() -> None:
    state, actions = transition(promoted(), Rollback("frank", "users complain"), PLAN)
    assert (state.phase, state.candidate_weight_bp, state.shadow_percent) == ("rolled_back", 0, 0.0)
    assert actions[:2] == (SetWeights(0, 0.0, "baseline"), StopShadow())
    with pytest.raises(RejectedEvent, match="only a migration in shadow, canary or paused can be promoted"):
        transition(state, Promote(1.0), PLAN)
    state, actions = transition(state, Retry(500.0, "frank"), PLAN)
    assert (state.phase, state.consecutive_failures, state.step_started_at) == ("shadow", 0, 500.0)


def test_settled_promotion_can_still_be_rolled_back() -> None:
    state = settled()
    assert not expects_tick(state)
    assert run(state, Rollback("gina", "late regression")).phase == "rolled_back"


def test_set_weight_is_bounded() -> None:
    with pytest.raises(ValueError, match=r"0\.\.10000"):
        SetWeight(10001, 0.0)


@pytest.mark.parametrize("name", list(STATES))
def test_state_round_trips_through_json(name: str) -> None:
    state = STATES[name]()
    assert MigrationState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


# The plan ----------------------------------------------------------------------------


def spec(**overrides: object) -> MigrationSpec:
    data: dict[str, object] = {
        "id": "chat-to-sonnet",
        "alias": "chat",
        "baseline": {"provider": "openai", "model": "gpt-4o"},
        "candidate": {"provider": "anthropic", "model": "claude-sonnet"},
        "sticky": {"salt": "pepper"},
        **overrides,
    }
    return MigrationSpec.model_validate(data)


def test_defaults_follow_the_issue() -> None:
    plan, gates = spec().plan, spec().gates
    assert (plan.shadow_percent, plan.weights_bp, plan.min_samples) == (10, (2500, 5000, 7500, 10000), 200)
    assert (plan.consecutive_failures, plan.post_promotion_shadow_percent) == (3, 5)
    assert (gates.error_rate, gates.p99_ms, gates.ttft_p99_ms, gates.cost_increase) == (0.02, 800, 800, 0.05)
    assert (gates.critical_error_rate, gates.critical_min_requests) == (0.5, 20)
    assert spec().sticky.header == "x-cutover-sticky-key"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"plan": {"weights": [50, 25, 100]}}, "strictly increasing"),
        ({"plan": {"weights": [25, 50]}}, "last weight must be 100"),
        ({"plan": {"weights": [0, 100]}}, "percent in"),
        ({"plan": {"min_step_s": 600, "max_step_s": 600}}, "max_step_s must be greater"),
        ({"plan": {"post_promotion_shadow_percent": 0}}, "greater than 0"),
        ({"gates": {"error_rate": 1.5}}, "less than 1"),
        ({"candidate": {"provider": "openai", "model": "gpt-4o"}}, "differ from baseline"),
        ({"id": "has spaces"}, "pattern"),
        ({"plan": {"shadow": 10}}, "Extra inputs"),
        ({"sticky": {}}, "salt"),
    ],
)
def test_bad_plans_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(**overrides)


def test_specs_are_frozen() -> None:
    with pytest.raises(ValidationError):
        spec().plan.min_samples = 1  # type: ignore[misc]


# Gates into the state machine -------------------------------------------------------

SLOW = Sample("ok", 1500.0, None, 1000)
FAST = Sample("ok", 300.0, None, 1000)


@pytest.mark.parametrize(
    ("gate", "candidate"),
    [
        ("error_rate", [FAST] * 370 + [Sample("error")] * 30),
        ("latency_p99", [SLOW] * 40 + [FAST] * 360),
        ("ttft_p99", [Sample("ok", 300.0, 1900.0, 1000)] * 400),
        ("cost", [Sample("ok", 300.0, None, 1300)] * 400),
    ],
)
def test_each_gate_can_roll_back(gate: str, candidate: list[Sample]) -> None:
    state = canary(1)
    t = state.step_started_at or 0.0
    window = StepWindow(t, ArmWindow.of([FAST] * 400), ArmWindow.of(candidate))
    for i in range(PLAN.consecutive_failures):
        now = t + PLAN.min_step_s + 10 * i
        result = evaluate(window, GATES, PLAN, now)
        assert result.result == "fail" and not result.critical
        assert [g.gate for g in result.gates if g.result == "fail"] == [gate]
        state, _ = transition(state, Tick(result, now), PLAN)
    assert state.phase == "rolled_back"
    assert gate in state.reason


def test_critical_guard_through_the_gates() -> None:
    state = canary(0)
    t = state.step_started_at or 0.0
    window = StepWindow(t, ArmWindow.of([FAST] * 5), ArmWindow.of([Sample("error")] * 20))
    state, _ = transition(state, Tick(evaluate(window, GATES, PLAN, t + 20), t + 20), PLAN)
    assert state.phase == "rolled_back"
    assert state.reason.startswith("rolled back at once: critical: candidate error ratio 1.000 (20/20)")


def test_too_few_samples_holds_then_pauses() -> None:
    state = started()
    window = StepWindow(0.0, ArmWindow.of([FAST] * 1000), ArmWindow.of([FAST] * 57))
    for now in (400.0, 1000.0, 2990.0):
        result = evaluate(window, GATES, PLAN, now)
        assert result.reason == "candidate has 57/200 samples"
        same, actions = transition(state, Tick(result, now), PLAN)
        assert same is state and actions == ()
    state, _ = transition(state, Tick(evaluate(window, GATES, PLAN, 3000.0), 3000.0), PLAN)
    assert state.phase == "paused"
    assert state.reason.endswith("candidate has 57/200 samples")


# Simulated traffic ----------------------------------------------------------------

SIM_PLAN = StepPlan(min_step_s=600, max_step_s=6 * 3600, interval_s=60, min_samples=200, safety_window_s=0)
RPS = 2.0
# Successful latencies: 16 evenly spaced quantiles of a lognormal with median 300 ms
# (true p99 ~ 600 ms), so the latency gate is exercised without deciding anything.
LATENCY_BUCKETS = [bucket_index(300 * math.exp(0.3 * NormalDist().inv_cdf((i + 0.5) / 16))) for i in range(16)]
COST_MICROS = 1000


def arm_window(ok: int, errors: int, pairs: int = 0) -> ArmWindow:
    """What one arm saw in an interval, counted straight into a window (fast enough for 400 runs)."""
    # Successes spread evenly over the latency quantiles: the latency gate sees a
    # realistic shape, and the error gate alone decides.
    buckets: dict[int, int] = {}
    for i, bucket in enumerate(LATENCY_BUCKETS):
        buckets[bucket] = buckets.get(bucket, 0) + ok // 16 + (i < ok % 16)
    return ArmWindow(
        requests=ok + errors,
        errors=errors,
        latency=Histogram(tuple(sorted((b, n) for b, n in buckets.items() if n))),
        cost=Sums(ok, ok * COST_MICROS, ok * COST_MICROS**2),
        pairs=Sums(pairs, 0, 0),  # shadowed prompts cost the same on both arms
    )


def simulate(seed: int, error_rate: float) -> MigrationState:
    """A whole migration at 2 req/s with Bernoulli candidate errors; gates every interval."""
    draw = random.Random(seed).random
    state, _ = transition(MigrationState(), Start(0.0), SIM_PLAN)
    window, now = StepWindow(0.0), 0.0
    while expects_tick(state) and state.phase != "promoted":
        weight, shadow = state.candidate_weight_bp / 10000, state.shadow_percent / 100
        copies_to_candidate = state.shadow_to == "candidate"
        ok_baseline = ok_candidate = errors = pairs = 0
        for _ in range(int(RPS * SIM_PLAN.interval_s)):
            on_candidate = draw() < weight
            # A shadow copy goes to the arm that did not serve the request.
            copied = on_candidate != copies_to_candidate and draw() < shadow
            if on_candidate or copied:
                if draw() < error_rate:
                    errors += 1
                else:
                    ok_candidate += 1
                    pairs += copied
            if copied or not on_candidate:
                ok_baseline += 1
        now += SIM_PLAN.interval_s
        window = StepWindow(
            window.started_at,
            merge(window.baseline, arm_window(ok_baseline, 0)),
            merge(window.candidate, arm_window(ok_candidate, errors, pairs)),
        )
        state, actions = transition(state, Tick(evaluate(window, GATES, SIM_PLAN, now), now), SIM_PLAN)
        for action in actions:
            if isinstance(action, StartWindow):
                window = StepWindow(action.started_at)
    return state


def test_true_one_percent_errors_are_never_rolled_back() -> None:
    ends = [simulate(seed, 0.01) for seed in range(200)]
    phases = [s.phase for s in ends]
    assert phases.count("rolled_back") == 0, [s.reason for s in ends if s.phase == "rolled_back"]
    assert phases.count("promoted") >= 195, [s.reason for s in ends if s.phase != "promoted"]


def test_true_five_percent_errors_are_rolled_back() -> None:
    ends = [simulate(seed, 0.05) for seed in range(1000, 1200)]
    rolled_back = [s for s in ends if s.phase == "rolled_back"]
    assert len(rolled_back) >= 196, [s.reason for s in ends if s.phase != "rolled_back"]
    assert all("error_rate" in s.reason for s in rolled_back)
