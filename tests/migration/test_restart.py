"""A gateway restarted mid-canary on the same SQLite store resumes where it stopped:
same phase, step, weights and version, the audit trail intact and growing, the
step's outcome window carried over, and every user on the arm it had."""

from __future__ import annotations

import time
from pathlib import Path

from tests.gateway.conftest import GatewayFactory
from tests.gateway.helpers import metric
from tests.migration.conftest import StackFactory
from tests.migration.support import MIGRATION_ID, Stack, held_plan, migration_spec
from tests.support import wait_for

USERS = [f"user-{i}" for i in range(40)]
RESUMED = ("phase", "step_index", "candidate_weight_bp", "shadow_percent", "step_started_at", "version")


def test_a_restarted_gateway_resumes_mid_canary(
    make_stack: StackFactory, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    store = {"backend": "sqlite", "path": str(tmp_path / "state" / "cutover.sqlite")}
    # The stopped process does not hand its controller lease back: a short TTL lets the new one take it soon.
    stack = make_stack(
        # No canary pair copies: every request counted in the window is one of the 40 sent.
        migrations=[migration_spec(plan=held_plan(min_samples=1000), gates={"quality": {"canary_pair_share": 0}})],
        store=store,
        controller={"lease_ttl_s": 0.5},
    )
    stack.wait_for("canary", step=0)
    assert stack.act_ok("promote")["state"]["step_index"] == 1

    since = time.time()
    stack.send_users(USERS)
    arms = stack.arms_of(since)
    assert set(arms.values()) == {"baseline", "candidate"}
    wait_for(
        lambda: any(t["verdict"]["requests_baseline"] + t["verdict"]["requests_candidate"] == 40
                    for t in stack.ticks()),
        timeout=10, what="a tick that has seen all the step's traffic",
    )
    before = stack.describe()
    history = stack.history()
    stack.gw.stop()

    restarted = Stack(make_gateway(config=stack.gw.config), stack.baseline, stack.candidate)
    try:
        after = restarted.describe()
        assert {k: after["state"][k] for k in RESUMED[:-1]} == {k: before["state"][k] for k in RESUMED[:-1]}
        assert (after["state"]["phase"], after["state"]["step_index"]) == ("canary", 1)
        assert after["state"]["candidate_weight_bp"] == 5000
        assert after["version"] == before["version"]
        assert after["auto_analysis"] is True

        # Same entries, then new ticks from the new process: none lost, none rewritten.
        wait_for(lambda: len(restarted.ticks()) > len([e for e in history if e["kind"] == "tick"]) + 1,
                 timeout=10, what="ticks after the restart")
        resumed_history = restarted.history()
        assert resumed_history[: len(history)] == history
        new_entries = resumed_history[len(history):]
        assert new_entries and all(e["kind"] == "tick" for e in new_entries)
        # The step's window survived: the new process judges the old process's outcomes too.
        assert new_entries[-1]["verdict"]["requests_baseline"] + new_entries[-1]["verdict"]["requests_candidate"] == 40
        assert new_entries[-1]["verdict"]["step_started_at"] == before["state"]["step_started_at"]

        text = restarted.metrics()
        assert metric(text, "cutover_controller_leader") == 1
        assert metric(text, "cutover_migration_phase", migration=MIGRATION_ID, phase="canary") == 1
        assert metric(text, "cutover_migration_candidate_weight_ratio", migration=MIGRATION_ID) == 0.5

        since = time.time()
        restarted.send_users(USERS)
        assert restarted.arms_of(since) == arms
    finally:
        restarted.close()
