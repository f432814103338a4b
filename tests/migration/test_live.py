"""LiveMigrations without sockets: per-request decisions, sample recording, state adoption."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from config.migration import MigrationSpec
from migration.live import Decision, LiveMigrations
from migration.rollout import Resumable
from migration.split import choose_arm
from migration.types import PHASES
from migration.window import Sample, StepWindow
from routing.table import Route
from telemetry.metrics import Metrics
from tests.migration.support import ALIAS, MIGRATION_ID, SALT, fast_plan, migration_spec
from tests.migration.values import BACKUP, BASE, CAND, OK, ROUTE, SPEC, migration_state, sample


def _runtime(rng: Callable[[], float] = lambda: 0.5, metrics: Metrics | None = None) -> LiveMigrations:
    return LiveMigrations((metrics or Metrics()).migration, rng=rng)


def _decide(runtime: LiveMigrations, payload: dict[str, Any] | None = None, header: str | None = None,
            client_key: str | None = None, route: Route = ROUTE) -> Decision | None:
    return runtime.decide(route, payload if payload is not None else {"user": "u1"}, header, client_key)


def _key_on(arm: str, weight_bp: int, prefix: str) -> str:
    """A sticky key the hash puts on `arm` at `weight_bp`."""
    return next(
        key for key in (f"{prefix}{i}" for i in range(10_000))
        if choose_arm(weight_bp, key, SALT, MIGRATION_ID, lambda: 0.0) == arm
    )


def _tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {}}}



def test_an_alias_without_a_running_migration_is_served_as_configured() -> None:
    runtime = _runtime()
    assert _decide(runtime) is None and runtime.sticky_header(ALIAS) is None
    for phase in ("pending", "rolled_back", "aborted"):
        runtime.apply(SPEC, migration_state(phase, started=None if phase == "pending" else 100.0, version=10))
        assert _decide(runtime) is None, phase
    assert runtime.sticky_header(ALIAS) == b"x-cutover-sticky-key"
    assert runtime.sticky_header("other-alias") is None


def test_the_arm_goes_first_and_the_candidate_is_never_the_baselines_fallback() -> None:
    runtime = _runtime()
    runtime.apply(SPEC, migration_state("canary", weight_bp=10_000))
    decision = _decide(runtime)
    assert decision is not None
    assert (decision.arm, decision.arm_target, decision.targets) == ("candidate", CAND, (CAND, BASE, BACKUP))
    assert decision.migration_id == MIGRATION_ID and decision.step_started_at == 100.0

    runtime.apply(SPEC, migration_state("canary", weight_bp=0, version=2))
    # Even when the alias's own route lists the candidate, a baseline request never falls back to it.
    listed = Route(ALIAS, (BASE, CAND, BACKUP), "error")
    decision = _decide(runtime, route=listed)
    assert decision is not None
    assert (decision.arm, decision.arm_target, decision.targets) == ("baseline", BASE, (BASE, BACKUP))


def test_the_sticky_key_is_the_header_then_the_user_then_the_client_key() -> None:
    runtime = _runtime()
    runtime.apply(SPEC, migration_state("canary", weight_bp=5000))
    on_candidate, on_baseline = _key_on("candidate", 5000, "c"), _key_on("baseline", 5000, "b")

    def arm(**kwargs: Any) -> str:
        decision = _decide(runtime, **kwargs)
        assert decision is not None
        return decision.arm

    assert arm(payload={"user": on_baseline}, header=on_candidate, client_key=on_baseline) == "candidate"
    assert arm(payload={"user": on_baseline}, client_key=on_candidate) == "baseline"
    assert arm(payload={"user": on_candidate}, client_key=on_baseline) == "candidate"
    assert arm(payload={}, client_key=on_candidate) == "candidate"
    assert arm(payload={"user": 42}, client_key=on_baseline) == "baseline"  # a non-string user is no key
    for _ in range(20):
        assert arm(payload={"user": on_candidate}) == "candidate"


@pytest.mark.parametrize(
    ("draw", "arm"), [(0.1, "candidate"), (0.49, "candidate"), (0.5, "baseline"), (0.9, "baseline")]
)
def test_a_keyless_request_draws_from_the_injected_rng(draw: float, arm: str) -> None:
    runtime = _runtime(rng=lambda: draw)
    runtime.apply(SPEC, migration_state("canary", weight_bp=5000))
    decision = _decide(runtime, payload={})
    assert decision is not None and decision.arm == arm


def test_shadow_copies_go_to_the_arm_not_serving_and_never_while_paused() -> None:
    runtime = _runtime()
    runtime.apply(SPEC, migration_state("shadow", shadow=100.0))
    decision = _decide(runtime)
    assert decision is not None
    assert (decision.arm, decision.shadow_arm, decision.shadow_target) == ("baseline", "candidate", CAND)
    assert runtime.shadow_allowed(decision)

    # Promoted: everybody on the candidate, copies back to the old baseline.
    runtime.apply(SPEC, migration_state("promoted", weight_bp=10_000, shadow=100.0, version=2))
    decision = _decide(runtime)
    assert decision is not None
    assert (decision.arm, decision.shadow_arm, decision.shadow_target) == ("candidate", "baseline", BASE)

    # In a canary copies go to the baseline, so a baseline request is not copied onto itself.
    runtime.apply(SPEC, migration_state("canary", weight_bp=5000, shadow=100.0, version=3))
    baseline_user = _key_on("baseline", 5000, "b")
    decision = _decide(runtime, payload={"user": baseline_user})
    assert decision is not None and decision.arm == "baseline" and decision.shadow_target is None

    paused = migration_state("paused", shadow=100.0, version=4, paused_from=Resumable("shadow", 0))
    runtime.apply(SPEC, paused)
    decision = _decide(runtime)
    assert decision is not None and decision.shadow_target is None and decision.shadow_arm is None


def test_a_request_naming_an_excluded_tool_is_not_copied() -> None:
    metrics = Metrics()
    runtime = _runtime(metrics=metrics)
    runtime.apply(SPEC, migration_state("shadow", shadow=100.0))
    excluded = _decide(runtime, payload={"user": "u1", "tools": [_tool("lookup"), _tool("send_email")]})
    allowed = _decide(runtime, payload={"user": "u1", "tools": [_tool("lookup")]})
    assert excluded is not None and excluded.shadow_target is None and excluded.arm == "baseline"
    assert allowed is not None and allowed.shadow_target == CAND
    assert sample(metrics, "cutover_shadow_requests_total", {"migration": MIGRATION_ID, "outcome": "excluded"}) == 1


def test_the_kill_switch_serves_the_route_as_configured() -> None:
    runtime = _runtime()
    runtime.apply(SPEC, migration_state("canary", weight_bp=10_000))
    runtime.set_kill_switches([ALIAS])
    assert runtime.kill_switches() == frozenset({ALIAS})
    assert _decide(runtime) is None
    runtime.set_kill_switches([])
    decision = _decide(runtime)
    assert decision is not None and decision.arm == "candidate"


def test_outcomes_are_counted_for_their_step_only() -> None:
    runtime = _runtime()
    runtime.apply(SPEC, migration_state("canary", weight_bp=10_000, shadow=5.0))
    decision = _decide(runtime)
    assert decision is not None
    for _ in range(3):
        runtime.record(decision, "baseline", OK)
    runtime.record(decision, "candidate", Sample("error"))
    runtime.record_pair(decision, 150, 100)
    window = runtime.local_window(MIGRATION_ID)
    assert window is not None and window.started_at == 100.0
    assert (window.baseline.requests, window.candidate.requests, window.candidate.errors) == (3, 1, 1)
    assert window.candidate.pairs.count == 1 and window.candidate.pairs.total == 500_000

    # A new step: what was counted belongs to the old window, and late samples of the old step are dropped.
    runtime.apply(SPEC, migration_state("canary", weight_bp=10_000, shadow=5.0, started=200.0, version=2))
    assert not runtime.shadow_allowed(decision)
    runtime.record(decision, "candidate", OK)
    runtime.record_pair(decision, 150, 100)
    window = runtime.local_window(MIGRATION_ID)
    assert window == StepWindow(200.0)


def test_an_older_state_never_replaces_a_newer_one() -> None:
    metrics = Metrics()
    runtime = _runtime(metrics=metrics)
    newer = migration_state("canary", weight_bp=5000, version=3)
    runtime.apply(SPEC, newer)
    runtime.apply(SPEC, migration_state("shadow", shadow=10.0, started=50.0, version=2))
    assert runtime.migrations()[MIGRATION_ID] == (SPEC, newer)
    for phase in PHASES:
        value = sample(metrics, "cutover_migration_phase", {"migration": MIGRATION_ID, "phase": phase})
        assert value == (1.0 if phase == "canary" else 0.0)
    assert sample(metrics, "cutover_migration_candidate_weight_ratio", {"migration": MIGRATION_ID}) == 0.5
    # The same version again (a sync reading back what was just committed) is harmless.
    runtime.apply(SPEC, newer)
    assert runtime.migrations()[MIGRATION_ID][1] is newer


def test_an_alias_follows_its_running_migration() -> None:
    runtime = _runtime()
    finished = MigrationSpec.model_validate(migration_spec(migration_id="old-one", plan=fast_plan()))
    runtime.apply(finished, migration_state("rolled_back", version=5))
    runtime.apply(SPEC, migration_state("canary", weight_bp=10_000))
    decision = _decide(runtime)
    assert decision is not None and decision.migration_id == MIGRATION_ID
    # A finished migration read later does not take the alias back.
    runtime.apply(finished, migration_state("aborted", version=6))
    decision = _decide(runtime)
    assert decision is not None and decision.migration_id == MIGRATION_ID


def test_arms_of_names_both_arms_of_the_alias_migration() -> None:
    runtime = _runtime()
    assert runtime.arms_of(ALIAS) == []
    runtime.apply(SPEC, migration_state("canary", weight_bp=2_500))
    assert runtime.arms_of(ALIAS) == [(BASE.provider, BASE.model), (CAND.provider, CAND.model)]
    assert runtime.arms_of("another-alias") == []


def test_a_pause_by_the_gates_is_exported_for_the_alert() -> None:
    metrics = Metrics()
    runtime = _runtime(metrics=metrics)
    labels = {"migration": MIGRATION_ID}
    runtime.apply(SPEC, migration_state("paused", paused_by="gates", version=1))
    assert sample(metrics, "cutover_migration_paused_by_gates", labels) == 1
    runtime.apply(SPEC, migration_state("paused", paused_by="dave", version=2))
    assert sample(metrics, "cutover_migration_paused_by_gates", labels) == 0
    runtime.apply(SPEC, migration_state("canary", weight_bp=2_500, version=3))
    assert sample(metrics, "cutover_migration_paused_by_gates", labels) == 0
