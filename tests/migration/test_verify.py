"""Verdicts recomputed from audit records alone; an edited record is a mismatch."""

from __future__ import annotations

import copy

from config.migration import GateThresholds, StepPlan
from migration.gates import evaluate
from migration.verify import verify
from migration.window import ArmWindow, Sample, StepWindow

PLAN = StepPlan(min_step_s=300, max_step_s=3000, min_samples=200)


def arm(ok: int, errors: int = 0) -> ArmWindow:
    items = [Sample("ok", 300.0, None, 1000)] * ok + [Sample("error")] * errors
    return ArmWindow.of(items, attempts=[s.kind for s in items])


def entries() -> list[dict[str, object]]:
    records: list[dict[str, object]] = []
    for i, candidate in enumerate((arm(100), arm(2000, 10), arm(370, 30))):
        block = StepWindow(0.0, arm(10), arm(50))
        verdict = evaluate(StepWindow(0.0, arm(400), candidate), GateThresholds(), PLAN, 400.0 + i, block, 2, 300.0)
        records.append({"time": f"t{i}", "kind": "tick", "verdict": verdict.to_dict()})
    records.append({"time": "t9", "kind": "transition", "verdict": None})
    return records


def test_an_untouched_trail_recomputes_exactly() -> None:
    report = verify(entries())
    assert report.ok and (report.verdicts, report.unverifiable) == (3, 0)
    # Seven gates on the step (five, and the two cheap quality checks), six on the block (the critical guard is
    # step-wide).
    assert report.gates == 3 * 13
    assert str(report).startswith("3 verdicts and 39 gate results recomputed from the audit records: all match")


def test_edited_counts_or_results_are_mismatches() -> None:
    records = entries()
    edited = copy.deepcopy(records)
    gate = edited[2]["verdict"]["gates"][1]  # type: ignore[index]
    assert gate["gate"] == "error_rate" and gate["result"] == "fail"
    gate["inputs"]["k_fail"] = gate["inputs"]["k_pass"] = 2
    passed = copy.deepcopy(records)
    passed[0]["verdict"]["result"] = "pass"  # type: ignore[index]
    report = verify(edited + passed[:1])
    assert [m.what for m in report.mismatches] == ["error_rate (step)", "verdict"]


def test_records_without_inputs_are_counted_apart() -> None:
    old = {"time": "t0", "verdict": {"result": "pass", "gates": [{"gate": "error_rate", "bound": 0.01}]}}
    report = verify([old, *entries()])
    assert report.ok and report.unverifiable == 1
