"""A Responses API conversation whose turns a migration moves between arms never breaks: the gateway keeps
the conversation and replays it in full to whichever arm serves the next turn."""

from __future__ import annotations

import time

from migration.split import choose_arm
from tests.gateway.helpers import metric
from tests.migration.conftest import StackFactory
from tests.migration.support import ALIAS, MIGRATION_ID, SALT, Stack, held_plan, migration_spec, primaries
from tests.support import wait_for


def test_a_conversation_continues_across_a_weight_change_and_a_rollback(make_stack: StackFactory) -> None:
    stack = make_stack(migrations=[migration_spec(plan=held_plan())])
    stack.wait_for("canary", step=0)
    user = next(u for u in (f"user-{i}" for i in range(100))
                if choose_arm(2500, u, SALT, MIGRATION_ID, lambda: 0.0) == "candidate")
    client = stack.client
    turns: list[str] = []

    def turn(text: str, previous: str | None) -> tuple[str, list[str]]:
        since = time.time()
        response = client.responses.create(model=ALIAS, input=text, user=user,
                                           **({"previous_response_id": previous} if previous else {}))
        turns.extend([text, response.output_text])
        served = [(arm, r) for arm, sim in (("baseline", stack.baseline), ("candidate", stack.candidate))
                  for r in primaries(sim, since)]
        assert len(served) == 1, served
        arm, record = served[0]
        # Everything said so far went to the arm that serves this turn, this turn last.
        assert [m["content"] for m in record.body["messages"]] == turns[:-1]
        return response.id, [arm]

    first, arms = turn("My name is Ada.", None)
    assert arms == ["candidate"]
    stack.act_ok("set-weight", weight=0)
    second, arms = turn("What is my name?", first)
    assert arms == ["baseline"]
    stack.act_ok("set-weight", weight=100)
    third, arms = turn("Say it again.", second)
    assert arms == ["candidate"]
    stack.act_ok("rollback", reason="conversations must survive this")
    _, arms = turn("Once more.", third)
    assert arms == ["baseline"]
    # Each arm's figures count the turns it served while the migration ran, as for any dialect (after the
    # rollback the alias is served as configured, outside the migration).
    wait_for(lambda: (arm_requests(stack, "candidate"), arm_requests(stack, "baseline")) == (2, 1), timeout=10,
             what="the turns counted per arm")


def arm_requests(stack: Stack, arm: str) -> float:
    return metric(stack.metrics(), "cutover_migration_requests_total", migration=MIGRATION_ID, arm=arm)
