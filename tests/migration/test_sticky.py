"""The split is sticky: a user keeps its arm within a step, and as the candidate's
weight rises users only ever move from the baseline to the candidate."""

from __future__ import annotations

import time

from migration.split import choose_arm
from tests.migration.conftest import StackFactory
from tests.migration.support import MIGRATION_ID, SALT, held_plan, migration_spec

USERS = [f"user-{i}" for i in range(40)]


def test_users_keep_their_arm_and_only_move_to_the_candidate_as_weights_rise(make_stack: StackFactory) -> None:
    plan = held_plan(weights=[10, 35, 60, 85, 100])
    stack = make_stack(migrations=[migration_spec(plan=plan)])
    stack.wait_for("canary", step=0)

    previous: set[str] = set()
    for step, weight in enumerate((10, 35, 60, 85)):
        if step:
            moved = stack.act_ok("promote")["state"]
            assert (moved["phase"], moved["step_index"], moved["candidate_weight_bp"]) == ("canary", step, weight * 100)
        since = time.time()
        # Two rounds over every user: `arms_of` fails if any user is served by both arms.
        for _ in range(2):
            stack.send_users(USERS)
        arms = stack.arms_of(since)
        assert sorted(arms) == sorted(USERS)
        candidates = {user for user, arm in arms.items() if arm == "candidate"}

        # The very split the hash defines, and nobody moved back to the baseline.
        expected = {u for u in USERS if choose_arm(weight * 100, u, SALT, MIGRATION_ID, lambda: 0.0) == "candidate"}
        assert candidates == expected
        assert previous <= candidates, f"moved back to the baseline: {previous - candidates}"
        assert len(candidates) > len(previous) or weight == 10
        previous = candidates
    # A rough share check: 85 % of 40 users lands well above half.
    assert 24 <= len(previous) < len(USERS)
