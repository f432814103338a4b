"""Too little evidence holds a step: no advance and no rollback. A step still
inconclusive after max_step_s pauses the migration for a human, saying why."""

from __future__ import annotations

from tests.gateway.helpers import metric
from tests.migration.conftest import StackFactory
from tests.migration.support import MIGRATION_ID, fast_plan, migration_spec
from tests.support import wait_for


def test_too_few_samples_hold_the_step_then_pause_it_after_max_step_s(make_stack: StackFactory) -> None:
    plan = fast_plan(shadow_percent=0.0, min_step_s=0.3, max_step_s=2.0, min_samples=10_000, interval_s=0.2)
    # No canary pair copies: the window counts exactly the requests sent.
    stack = make_stack(migrations=[migration_spec(plan=plan, gates={"quality": {"canary_pair_share": 0}})])
    stack.wait_for("canary", step=0)
    started = stack.describe()
    stack.send_users(f"u{i}" for i in range(30))

    # Several analyses, all inconclusive and saying what is missing; the step holds.
    wait_for(lambda: len(stack.ticks()) >= 4, timeout=10, what="four analysis ticks")
    held = stack.describe()
    assert held["state"] == started["state"] and held["version"] == started["version"]
    ticks = stack.ticks()
    for tick in ticks:
        verdict = tick["verdict"]
        assert verdict["result"] == "inconclusive" and verdict["critical"] is False
        assert "/10000 samples" in verdict["reason"], verdict["reason"]
        assert verdict["min_samples"] == 10_000
        assert tick["from_phase"] == tick["to_phase"] == "canary"
        assert tick["version"] == started["version"]
    # The reason names the candidate's shortfall (the baseline needs no minimum to advance).
    last = ticks[-1]["verdict"]
    assert "candidate has" in last["reason"] and "baseline has" not in last["reason"], last["reason"]
    assert last["requests_baseline"] + last["requests_candidate"] == 30
    assert [e["action"] for e in stack.transitions()] == ["Create", "Start"]
    assert metric(stack.metrics(), "cutover_migration_rollbacks_total", migration=MIGRATION_ID) == 0

    # Past max_step_s: paused by the gates, weights frozen, analysis off.
    stack.wait_for("paused", timeout=10)
    described = stack.describe()
    state = described["state"]
    assert state["reason"].startswith("inconclusive after"), state["reason"]
    assert "max_step_s 2" in state["reason"] and "/10000 samples" in state["reason"]
    assert state["paused_from"] == {"phase": "canary", "step_index": 0}
    assert state["candidate_weight_bp"] == 2500 and state["shadow_percent"] == 0.0
    assert described["auto_analysis"] is False
    pause = stack.transitions()[-1]
    assert (pause["action"], pause["from_phase"], pause["to_phase"], pause["actor"]) == (
        "Tick", "canary", "paused", "gates",
    )
    assert pause["verdict"]["result"] == "inconclusive"
    assert pause["verdict"]["evaluated_at"] - pause["verdict"]["step_started_at"] >= 2.0

    # A paused migration is not analysed any more.
    ticks_when_paused = len(stack.ticks())
    stack.wait_rounds(0.6)
    assert len(stack.ticks()) == ticks_when_paused
    assert stack.describe()["version"] == described["version"]
