"""Shadow copies are fire-and-forget: they never slow, block or answer the client.

Latency is compared with an alias that is not migrated, served by the same
baseline simulator, in generous terms (median within 2x + 50 ms): the point is
that a copy hanging for seconds costs the client nothing, not a precise figure.
"""

from __future__ import annotations

import time
from typing import Any

from tests.gateway.helpers import metric, route
from tests.migration.conftest import StackFactory
from tests.migration.support import (
    ALIAS,
    MIGRATION_ID,
    Stack,
    held_plan,
    migration_spec,
    p50,
    primaries,
    shadows,
)
from tests.support import wait_for

DIRECT = "direct"  # the same baseline, not migrated: the reference latency
BASELINE_REPLY = "answer from the baseline"
CANDIDATE_REPLY = "answer from the candidate"
TOOL_PARAMS: dict[str, Any] = {"type": "object", "properties": {"to": {"type": "string"}}}


def _shadowing_stack(make_stack: StackFactory, candidate: dict[str, Any], shadow: dict[str, Any]) -> Stack:
    plan = held_plan(shadow_percent=100.0, post_promotion_shadow_percent=100.0, safety_window_s=600.0)
    return make_stack(
        migrations=[migration_spec(plan=plan, shadow=shadow)],
        models={ALIAS: route(("legacy", "old")), DIRECT: route(("legacy", "old"))},
        baseline={"reply": BASELINE_REPLY},
        candidate={"reply": CANDIDATE_REPLY, **candidate},
    )


def _timed(stack: Stack, model: str, user: str) -> float:
    started = time.perf_counter()
    assert stack.chat(user, model=model) == BASELINE_REPLY
    return time.perf_counter() - started


def _latencies(stack: Stack, rounds: int) -> tuple[list[float], list[float]]:
    """Client latency of the migrated alias and of the direct one, interleaved."""
    migrated: list[float] = []
    direct: list[float] = []
    for i in range(rounds):
        migrated.append(_timed(stack, ALIAS, f"m{i}"))
        direct.append(_timed(stack, DIRECT, f"d{i}"))
    return migrated, direct


def test_a_hanging_shadow_backend_leaves_primary_latency_unchanged(make_stack: StackFactory) -> None:
    stack = _shadowing_stack(make_stack, {"first_token_ms": 5000.0}, {"timeout_s": 10.0, "max_concurrency": 64})
    stack.wait_for("shadow")
    migrated, direct = _latencies(stack, 20)

    # Every copy went out and is still hanging at the candidate while the clients were answered.
    assert metric(stack.metrics(), "cutover_shadow_requests_total", migration=MIGRATION_ID, outcome="sent") == 20
    copies = shadows(stack.candidate)
    assert len(copies) == 20 and all(r.ended_at is None for r in copies)
    assert max(migrated) < 1.5, migrated  # each copy hangs for 5 s
    assert p50(migrated) <= 2 * p50(direct) + 0.05, (p50(migrated), p50(direct))


def test_a_full_shadow_pool_drops_copies_instead_of_blocking(make_stack: StackFactory) -> None:
    hang = {"error_rate": 1.0, "error_kinds": {"timeout": 1.0}, "hang_s": 30.0}
    stack = _shadowing_stack(make_stack, hang, {"timeout_s": 10.0, "max_concurrency": 1})
    stack.wait_for("shadow")
    migrated, direct = _latencies(stack, 20)

    text = stack.metrics()
    sent = metric(text, "cutover_shadow_requests_total", migration=MIGRATION_ID, outcome="sent")
    dropped = metric(text, "cutover_shadow_requests_total", migration=MIGRATION_ID, outcome="dropped")
    # The one slot is held by the first, hanging copy: every later copy is dropped, none queued.
    assert (sent, dropped) == (1, 19)
    assert len(shadows(stack.candidate)) == 1
    assert max(migrated) < 1.5, migrated  # the copy in the pool hangs for 30 s
    assert p50(migrated) <= 2 * p50(direct) + 0.05, (p50(migrated), p50(direct))


def test_shadow_answers_never_reach_the_client(make_stack: StackFactory) -> None:
    stack = _shadowing_stack(make_stack, {}, {"timeout_s": 5.0})
    stack.wait_for("shadow")
    answers = [stack.chat(f"u{i}") for i in range(10)]
    answers += [stack.chat(f"s{i}", stream=True) for i in range(10)]
    assert answers == [BASELINE_REPLY] * 20

    wait_for(
        lambda: metric(stack.metrics(), "cutover_shadow_requests_total", migration=MIGRATION_ID, outcome="compared")
        == 20,
        timeout=10, what="every copy compared",
    )
    copies = shadows(stack.candidate)
    assert len(copies) == 20 and all(r.model == "new" for r in copies)
    assert sum(r.stream for r in copies) == 10  # a streamed request is copied as a stream
    assert primaries(stack.candidate) == [] and shadows(stack.baseline) == []
    text = stack.metrics()
    # The answers differ, so the pairs were compared and found to disagree.
    assert metric(text, "cutover_shadow_agreements_total", migration=MIGRATION_ID, check="status") == 20
    assert metric(text, "cutover_shadow_agreements_total", migration=MIGRATION_ID, check="overall") == 0
    assert metric(text, "cutover_migration_requests_total", migration=MIGRATION_ID, arm="shadow") == 20

    # Promoted, the copies go the other way: clients get the candidate, never the old baseline.
    stack.act_ok("promote-fully")
    assert stack.state()["shadow_percent"] == 100.0
    since = time.time()
    answers = [stack.chat(f"p{i}") for i in range(5)] + [stack.chat(f"q{i}", stream=True) for i in range(5)]
    assert answers == [CANDIDATE_REPLY] * 10
    wait_for(lambda: len([r for r in shadows(stack.baseline) if r.started_at >= since]) == 10,
             timeout=10, what="copies to the old baseline")
    assert primaries(stack.baseline, since) == []


def test_requests_naming_an_excluded_tool_are_not_shadowed(make_stack: StackFactory) -> None:
    stack = _shadowing_stack(make_stack, {}, {"exclude_tools": ["send_email"]})
    stack.wait_for("shadow")

    def tool(name: str) -> dict[str, Any]:
        return {"type": "function", "function": {"name": name, "parameters": TOOL_PARAMS}}

    for i in range(5):
        assert stack.chat(f"x{i}", tools=[tool("lookup"), tool("send_email")]) == BASELINE_REPLY
    for i in range(3):
        assert stack.chat(f"y{i}", tools=[tool("lookup")]) == BASELINE_REPLY
    assert stack.chat("z0") == BASELINE_REPLY

    wait_for(lambda: len(shadows(stack.candidate)) == 4, timeout=10, what="the allowed requests' copies")
    copied = shadows(stack.candidate)
    assert sorted(str(r.body.get("user")) for r in copied) == ["y0", "y1", "y2", "z0"]
    assert all("send_email" not in str(r.body) for r in copied)
    text = stack.metrics()
    assert metric(text, "cutover_shadow_requests_total", migration=MIGRATION_ID, outcome="excluded") == 5
    assert metric(text, "cutover_shadow_requests_total", migration=MIGRATION_ID, outcome="sent") == 4
    # The excluded requests themselves were served normally, by the baseline.
    assert len(primaries(stack.baseline)) == 9


def test_responses_and_completions_traffic_is_shadowed_and_compared(make_stack: StackFactory) -> None:
    # The candidate answers the same words: the pairs agree only if each answer's text was read from its shape.
    stack = _shadowing_stack(make_stack, {"reply": BASELINE_REPLY}, {"timeout_s": 5.0})
    stack.wait_for("shadow")
    client = stack.client
    for i in range(3):
        assert client.responses.create(model=ALIAS, input="hi", user=f"r{i}").output_text == BASELINE_REPLY
        with client.responses.stream(model=ALIAS, input="hi", user=f"rs{i}") as stream:
            assert stream.get_final_response().output_text == BASELINE_REPLY
        assert client.completions.create(model=ALIAS, prompt="hi", user=f"c{i}").choices[0].text == BASELINE_REPLY
    wait_for(
        lambda: metric(stack.metrics(), "cutover_shadow_requests_total", migration=MIGRATION_ID, outcome="compared")
        == 9,
        timeout=10, what="every copy compared",
    )
    text = stack.metrics()
    assert metric(text, "cutover_shadow_agreements_total", migration=MIGRATION_ID, check="status") == 9
    assert metric(text, "cutover_shadow_agreements_total", migration=MIGRATION_ID, check="overall") == 9
    copies = shadows(stack.candidate)
    assert len(copies) == 9 and all(r.path == "/v1/chat/completions" for r in copies)
