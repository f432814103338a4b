"""A healthy, cheaper candidate walks the whole plan to a settled promotion.

The audit trail must show every phase in order, each automatic step backed by a
tick whose verdict carries the figures of every gate, and the metrics must show
where the migration is and what each arm served.
"""

from __future__ import annotations

import time
from typing import Any

from migration.types import PHASES
from tests.gateway.helpers import metric
from tests.migration.conftest import StackFactory
from tests.migration.support import MIGRATION_ID, Traffic, primaries, shadows
from tests.support import wait_for

GATES = {"critical_error_ratio", "error_rate", "latency_p99", "ttft_p99", "cost", "quality_json", "quality_tools"}
GATE_FIELDS = {"scope", "inputs", "estimate", "threshold", "alpha", "result", "note"}
# Same token counts on both arms, so the candidate costs half as much per request.
PRICES = {"old": {"input": 20, "output": 40}, "new": {"input": 10, "output": 20}}


def _move(entry: dict[str, Any]) -> tuple[Any, ...]:
    return (
        entry["action"], entry["from_phase"], entry["to_phase"], entry["step_index"],
        entry["candidate_weight_bp"], entry["shadow_percent"],
    )


def test_full_promotion_walks_every_phase_and_audits_every_verdict(make_stack: StackFactory) -> None:
    stack = make_stack(prices=PRICES)

    with Traffic(stack.gw, workers=6) as traffic:
        stack.wait_for("promoted", settled=True, timeout=60)
    assert set(traffic.statuses()) == {200}, traffic.statuses()

    history = stack.history()
    transitions = [e for e in history if e["kind"] == "transition"]
    assert [_move(e) for e in transitions] == [
        ("Create", "pending", "pending", 0, 0, 0.0),
        ("Start", "pending", "shadow", 0, 0, 50.0),
        ("Tick", "shadow", "canary", 0, 2500, 0.0),
        ("Tick", "canary", "canary", 1, 5000, 0.0),
        ("Tick", "canary", "canary", 2, 7500, 0.0),
        # At 100 % the old baseline keeps an arm through the post-promotion copy.
        ("Tick", "canary", "canary", 3, 10000, 50.0),
        ("Tick", "canary", "promoted", 0, 10000, 50.0),
        ("Tick", "promoted", "promoted", 0, 10000, 0.0),
    ]
    assert [e["version"] for e in transitions] == list(range(len(transitions)))
    assert [e["actor"] for e in transitions[:2]] == ["config", "config"]
    assert all(e["actor"] == "gates" for e in transitions[2:])
    assert "gates passed" in transitions[2]["reason"] and "in shadow" in transitions[2]["reason"]
    assert "safety window" in transitions[-1]["reason"]

    ticks = [e for e in history if e["kind"] == "tick"]
    assert len(ticks) >= 6
    for tick in ticks:
        verdict = tick["verdict"]
        assert verdict is not None and verdict["result"] in ("pass", "fail", "inconclusive")
        assert {g["gate"] for g in verdict["gates"] if g["scope"] == "step"} == GATES
        assert {g["gate"] for g in verdict["gates"] if g["scope"] == "block"} == GATES - {"critical_error_ratio"}
        for gate in verdict["gates"]:
            assert GATE_FIELDS <= set(gate), gate
            assert gate["result"] in ("pass", "fail", "inconclusive", "skipped")
            assert isinstance(gate["threshold"], float | int)
    # A tick that holds the step bumps no version: it carries the version of the state it judged.
    version = -1
    for entry in history:
        if entry["kind"] == "transition":
            version = entry["version"]
        else:
            assert entry["version"] == version, entry

    # Every automatic step: its tick passed, with figures on both arms, and the
    # transition that followed carries that very verdict.
    for transition in transitions[2:-1]:
        verdict = transition["verdict"]
        assert verdict["result"] == "pass", verdict["reason"]
        assert verdict["requests_baseline"] >= 20 and verdict["requests_candidate"] >= 20
        assert verdict["evaluated_at"] - verdict["step_started_at"] >= 0.5
        assert any(t["verdict"] == verdict for t in ticks), "the step's tick is not in the trail"
        by_gate = {g["gate"]: g for g in verdict["gates"] if g["scope"] == "step"}
        errors = by_gate["error_rate"]
        assert (errors["estimate"], errors["threshold"], errors["result"]) == (0.0, 0.02, "pass")
        assert errors["inputs"]["n"] >= 20 and errors["inputs"]["k_fail"] == 0
        latency = by_gate["latency_p99"]
        # The share of answers slower than 800 ms, against the 1 % a p99 under 800 ms allows.
        assert latency["result"] == "pass" and latency["estimate"] == 0.0 and latency["threshold"] == 0.01
        cost = by_gate["cost"]
        assert cost["result"] == "pass" and cost["threshold"] == 0.05
        assert cost["estimate"] is not None and -0.6 < cost["estimate"] < -0.4
        assert by_gate["ttft_p99"]["result"] == "skipped"  # no streams in this run
        assert by_gate["critical_error_ratio"]["result"] == "pass"

    state = stack.describe()
    assert state["state"]["phase"] == "promoted" and state["state"]["shadow_percent"] == 0.0
    assert state["auto_analysis"] is False and state["version"] == transitions[-1]["version"]

    text = stack.metrics()
    assert {p: metric(text, "cutover_migration_phase", migration=MIGRATION_ID, phase=p) for p in PHASES} == {
        p: (1.0 if p == "promoted" else 0.0) for p in PHASES
    }
    assert metric(text, "cutover_migration_candidate_weight_ratio", migration=MIGRATION_ID) == 1.0
    assert metric(text, "cutover_migration_shadow_ratio", migration=MIGRATION_ID) == 0.0
    for arm in ("baseline", "candidate", "shadow"):
        served = metric(text, "cutover_migration_requests_total", migration=MIGRATION_ID, arm=arm, status_class="2xx")
        assert served >= 20, (arm, served)
    assert metric(text, "cutover_migration_requests_total", migration=MIGRATION_ID, status_class="5xx") == 0
    sent = metric(text, "cutover_shadow_requests_total", migration=MIGRATION_ID, outcome="sent")
    compared = metric(text, "cutover_shadow_requests_total", migration=MIGRATION_ID, outcome="compared")
    assert sent >= 40 and 20 <= compared <= sent
    # Both simulators generate the same text: every compared pair agrees.
    assert metric(text, "cutover_shadow_agreements_total", migration=MIGRATION_ID, check="overall") == compared
    assert metric(text, "cutover_migration_transitions_total", migration=MIGRATION_ID, to_phase="canary") == 4
    assert metric(text, "cutover_migration_transitions_total", migration=MIGRATION_ID, to_phase="promoted") == 2
    assert metric(text, "cutover_migration_rollbacks_total", migration=MIGRATION_ID) == 0
    assert metric(text, "cutover_migration_verdicts_total", migration=MIGRATION_ID, gate="error_rate") == len(ticks)

    # Copies went both ways: to the candidate while shadowing, back to the baseline after.
    assert shadows(stack.candidate) and shadows(stack.baseline)
    assert all(r.model == "new" for r in shadows(stack.candidate))
    assert all(r.model == "old" for r in shadows(stack.baseline))

    # Settled: the candidate serves everything and nothing is copied any more.
    since = time.time()
    stack.send_users(f"after{i}" for i in range(20))
    wait_for(lambda: len(primaries(stack.candidate, since)) == 20, timeout=10, what="the candidate to serve everyone")
    assert primaries(stack.baseline, since) == []
    assert [r for r in shadows(stack.baseline) if r.started_at >= since] == []
    assert all(r.model == "new" for r in primaries(stack.candidate, since))
