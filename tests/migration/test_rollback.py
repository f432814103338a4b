"""A candidate that breaks a gate is rolled back, and the baseline takes all traffic again.

Each gate is driven by its own fault: server errors after the canary has started
(clients still get answers: a failed candidate falls back to the baseline),
slow first tokens, and a higher price. The critical guard rolls a badly broken
candidate back at its first tick with enough requests, long before the step's
minimum time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from migration.types import PHASES
from simulator import SimulationSettings
from tests.gateway.helpers import metric
from tests.migration.conftest import StackFactory
from tests.migration.support import MIGRATION_ID, Stack, Traffic, fast_plan, migration_spec, primaries
from tests.support import wait_for


@dataclass(frozen=True)
class GateCase:
    gate: str
    plan: dict[str, Any]
    gates: dict[str, Any]
    prices: dict[str, Any] | None
    # Applied to the candidate simulator once the canary has started (None: broken from the start).
    degrade: dict[str, Any] | None


CASES = [
    GateCase(
        "error_rate",
        fast_plan(weights=[50, 100]),
        # Keep the critical guard out of it: this is about the sequential test, not a collapse.
        {"critical_error_rate": 0.95},
        None,
        {"output_tokens": 4, "error_rate": 0.3, "error_kinds": {"server_error": 1.0}, "seed": 7},
    ),
    GateCase(
        "latency_p99",
        fast_plan(weights=[50, 100]),
        {"p99_ms": 200.0},
        None,
        {"output_tokens": 4, "first_token_ms": 400.0},
    ),
    GateCase(
        "cost",
        # No shadow phase: the gate compares the arms' mean cost per request in the canary.
        fast_plan(shadow_percent=0.0, weights=[50, 100]),
        {"cost_increase": 0.05},
        {"old": {"input": 10, "output": 20}, "new": {"input": 30, "output": 60}},
        None,
    ),
]


def _after_rollback(stack: Stack, gate: str, reason_mark: str) -> None:
    """What every rollback leaves behind: state, audit, metrics, and baseline-only routing.

    `gate` is the rollback metric's label (the first failing gate); `reason_mark` what the reason names."""
    state = stack.describe()
    assert state["state"]["phase"] == "rolled_back"
    assert (state["state"]["candidate_weight_bp"], state["state"]["shadow_percent"]) == (0, 0.0)
    assert state["auto_analysis"] is False
    assert reason_mark in state["state"]["reason"], state["state"]["reason"]

    rollback = stack.transitions()[-1]
    assert (rollback["action"], rollback["to_phase"], rollback["actor"]) == ("Tick", "rolled_back", "gates")
    assert (rollback["candidate_weight_bp"], rollback["shadow_percent"]) == (0, 0.0)
    failed = [g["gate"] for g in rollback["verdict"]["gates"] if g["result"] == "fail"]
    assert failed[0] == gate, failed
    # This process routes by the new state at once.
    local = stack.local_state()
    assert local is not None and (local.phase, local.candidate_weight_bp, local.shadow_percent) == (
        "rolled_back", 0, 0.0,
    )

    text = stack.metrics()
    assert metric(text, "cutover_migration_rollbacks_total", migration=MIGRATION_ID, reason=gate) == 1
    assert metric(text, "cutover_migration_rollbacks_total", migration=MIGRATION_ID) == 1
    assert {p: metric(text, "cutover_migration_phase", migration=MIGRATION_ID, phase=p) for p in PHASES} == {
        p: (1.0 if p == "rolled_back" else 0.0) for p in PHASES
    }
    assert metric(text, "cutover_migration_candidate_weight_ratio", migration=MIGRATION_ID) == 0.0
    assert metric(text, "cutover_migration_shadow_ratio", migration=MIGRATION_ID) == 0.0

    since = time.time()
    stack.send_users(f"later{i}" for i in range(30))
    wait_for(lambda: len(primaries(stack.baseline, since)) == 30, timeout=10, what="the baseline to serve everyone")
    assert [r for r in stack.candidate.requests if r.started_at >= since] == []


@pytest.mark.parametrize("case", CASES, ids=[c.gate for c in CASES])
def test_a_failing_gate_rolls_the_candidate_back(make_stack: StackFactory, case: GateCase) -> None:
    stack = make_stack(
        migrations=[migration_spec(plan=case.plan, gates=case.gates)],
        prices=case.prices,
        # One attempt per target: a candidate error goes straight to the baseline.
        retry={"attempts": 1},
    )
    with Traffic(stack.gw, workers=8) as traffic:
        stack.wait_for("canary", step=0)
        if case.degrade is not None:
            stack.candidate.set_settings(SimulationSettings(**case.degrade))
        stack.wait_for("rolled_back", timeout=20)

    # The fallback hid every candidate failure from the clients.
    assert set(traffic.statuses()) == {200}, traffic.statuses()
    assert all(r.content for r in traffic.replies)
    _after_rollback(stack, case.gate, f"{case.gate} (")
    # Not critical: the gate failed `consecutive_failures` checks in a row.
    transitions = stack.transitions()
    assert transitions[-1]["reason"].startswith("2 failed checks in a row"), transitions[-1]["reason"]
    assert transitions[-2]["reason"].startswith("check failed (1/2 in a row)"), transitions[-2]["reason"]
    assert transitions[-1]["verdict"]["critical"] is False


@pytest.mark.parametrize("breaker_threshold", [50, 5], ids=["breaker-out-of-the-way", "breaker-opens"])
def test_critical_guard_rolls_back_at_the_first_tick_with_enough_requests(
    make_stack: StackFactory, breaker_threshold: int
) -> None:
    """With a low breaker threshold the candidate's circuit opens after a few failures;
    requests of its arm are then served by the baseline and must still count against it."""
    # The error gate fails a collapse within a tick or two too, but needs 8 failed checks in a row here: the
    # guard, which needs no second look, comes first.
    plan = fast_plan(shadow_percent=0.0, weights=[50, 100], min_step_s=120.0, max_step_s=240.0, min_samples=500,
                     consecutive_failures=8)
    stack = make_stack(
        migrations=[migration_spec(plan=plan)],
        candidate={"error_rate": 1.0, "error_kinds": {"server_error": 1.0}},
        retry={"attempts": 1, "failure_threshold": breaker_threshold},
    )
    with Traffic(stack.gw, workers=6) as traffic:
        stack.wait_for("rolled_back", timeout=15)
    assert set(traffic.statuses()) == {200}, traffic.statuses()

    history = stack.history()
    rollback = [e for e in history if e["kind"] == "transition"][-1]
    assert (rollback["from_phase"], rollback["to_phase"]) == ("canary", "rolled_back")
    assert rollback["reason"].startswith("rolled back at once: critical (step): "), rollback["reason"]
    verdict = rollback["verdict"]
    assert verdict["critical"] is True and verdict["result"] == "fail"
    assert verdict["requests_candidate"] >= 20 and verdict["requests_candidate"] < 500
    assert verdict["evaluated_at"] - verdict["step_started_at"] < 120.0
    guard = next(g for g in verdict["gates"] if g["gate"] == "critical_error_ratio")
    assert guard["result"] == "fail" and guard["estimate"] >= 0.5 and guard["threshold"] == 0.5

    # At once: every earlier tick lacked the attempts for the guard (the error gate may have failed them).
    ticks = [e for e in history if e["kind"] == "tick"]
    assert ticks[-1]["verdict"] == verdict
    for tick in ticks[:-1]:
        earlier = next(g for g in tick["verdict"]["gates"] if g["gate"] == "critical_error_ratio")
        assert earlier["result"] == "skipped" and earlier["inputs"]["n"] < 20, earlier
    assert [e["to_phase"] for e in history if e["kind"] == "transition"][-1] == "rolled_back"
    assert [e["to_phase"] for e in history if e["kind"] == "transition"].count("rolled_back") == 1
    _after_rollback(stack, "critical_error_ratio", "critical (step): ")
