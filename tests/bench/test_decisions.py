"""The decision benchmark: its shortcut changes no outcome, and the script runs end to end."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import decisions
from decision_policies import Cutover
from decision_streams import Scenario, Streams

CASES = [
    Scenario("healthy", 2.0, horizon_s=8 * 3600),
    Scenario("slightly bad", 2.0, error=0.03, horizon_s=8 * 3600),
    Scenario("slow", 10.0, p99_ms=1000.0, horizon_s=8 * 3600),
    Scenario("dearer", 10.0, cost_increase=0.2, horizon_s=8 * 3600),
    Scenario("late jump", 2.0, start="last", change_at_s=3240.0, changed_error=0.1, horizon_s=8 * 3600),
    Scenario("after promotion", 2.0, start="promoted", change_at_s=1800.0, changed_error=0.1, horizon_s=6 * 3600),
]


@pytest.mark.parametrize("scenario", CASES, ids=[c.name for c in CASES])
def test_the_shortcut_changes_no_outcome(scenario: Scenario) -> None:
    for seed in range(3):
        streams = Streams(scenario, seed, decisions.PLAN.interval_s)
        fast = Cutover(scenario, decisions.PLAN, decisions.GATES, shortcut=True)
        full = Cutover(scenario, decisions.PLAN, decisions.GATES, shortcut=False)
        for index in range(int(scenario.horizon_s / decisions.PLAN.interval_s)):
            t = (index + 1) * decisions.PLAN.interval_s
            tick = streams.tick(index)
            fast.step(t, tick)
            full.step(t, tick)
            assert fast.state == full.state, (scenario.name, seed, t)
            if fast.outcome.done and full.outcome.done:
                break
        assert fast.outcome == full.outcome


def test_the_script_prints_its_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert decisions.main(["--runs", "4", "--rows", "10% errors @2/s", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    rows = [re.split(r"\s{2,}", line) for line in out.splitlines() if line.startswith("10% errors @2/s")]
    assert [row[1] for row in rows] == list(decisions.POLICIES)
    # A candidate failing one call in ten is rolled back by every policy.
    assert [row[2].split()[0] for row in rows] == ["100.0%"] * len(rows)
