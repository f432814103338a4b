"""MigrationService over a MemoryStore, on a fake clock: versions, audit, ticks, config adoption."""

from __future__ import annotations

import re
from typing import Any

import pytest

from config.migration import MigrationSpec
from migration.live import LiveMigrations
from migration.rollout import Pause, Promote, Resume, Rollback
from migration.service import MigrationConflict, MigrationError, MigrationNotFound, MigrationService
from migration.sync import StoreSync
from migration.window import Sample
from providers.target import TargetRef
from routing.table import Route
from store.memory import MemoryStore
from telemetry.metrics import Metrics
from tests.migration.support import ALIAS, MIGRATION_ID, fast_plan, migration_spec

OTHER = "gpt-4-mini"
ROUTE = Route(ALIAS, (TargetRef("legacy", "old"),), "error")
OK = Sample("ok", 10.0, None, 100)


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class World:
    """A service, the live migrations and store sync beside it, the store, and what it reported to the outside."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store or MemoryStore()
        self.metrics = Metrics()
        self.runtime = LiveMigrations(self.metrics.migration, rng=lambda: 0.5)
        self.clock = Clock()
        self.sync = StoreSync(self.store, self.runtime, self.metrics.migration, "replica-a", clock=self.clock)
        self.stopped_shadows: list[str] = []
        self.service = MigrationService(
            self.store, self.runtime, self.sync, self.metrics.migration,
            known_aliases=lambda: {ALIAS: object(), OTHER: object()},
            known_providers=lambda: {"legacy": object(), "modern": object()},
            on_stop_shadow=self.stopped_shadows.append,
            clock=self.clock,
        )

    async def version(self, migration_id: str = MIGRATION_ID) -> int:
        return (await self.service.get(migration_id)).version

    async def phase(self, migration_id: str = MIGRATION_ID) -> str:
        return str((await self.service.get(migration_id)).state["phase"])

    async def feed(self, baseline: list[Sample], candidate: list[Sample]) -> None:
        """Outcomes of the current step through the runtime, pushed to the store as a sync would."""
        decision = self.runtime.decide(ROUTE, {"user": "u1"}, None, None)
        assert decision is not None
        for outcome in baseline:
            self.runtime.record(decision, "baseline", outcome, [outcome.kind])
        for outcome in candidate:
            self.runtime.record(decision, "candidate", outcome, [outcome.kind])
        assert await self.sync.sync()

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


def _spec(**kwargs: Any) -> MigrationSpec:
    kwargs.setdefault("plan", fast_plan(min_step_s=10.0, max_step_s=100.0, min_samples=5))
    return MigrationSpec.model_validate(migration_spec(**kwargs))


async def test_create_records_the_migration_and_its_audit() -> None:
    world = World()
    stored = await world.service.create(_spec(), "alice", start=False)
    assert (stored.version, stored.state["phase"]) == (0, "pending")
    [created] = await world.service.history(MIGRATION_ID)
    assert (created["kind"], created["action"], created["actor"], created["version"]) == (
        "transition", "Create", "alice", 0,
    )
    assert created["reason"] == "created by alice" and created["time"].endswith("+00:00")
    local = world.runtime.migrations()[MIGRATION_ID][1]
    assert local.phase == "pending"

    started = await world.service.create(_spec(migration_id="m2", alias=OTHER), "bob", start=True)
    assert (started.version, started.state["phase"], started.state["shadow_percent"]) == (1, "shadow", 50.0)
    assert started.state["step_started_at"] == 1_000.0
    assert [e["action"] for e in await world.service.history("m2")] == ["Create", "Start"]
    assert world.runtime.migrations()["m2"][1].version == 1


async def test_create_refuses_duplicates_and_a_second_running_migration_on_an_alias() -> None:
    world = World()
    await world.service.create(_spec(), "alice", start=True)
    with pytest.raises(MigrationConflict, match="exists already"):
        await world.service.create(_spec(), "alice", start=True)
    with pytest.raises(MigrationConflict, match=f"already has a running migration '{MIGRATION_ID}'"):
        await world.service.create(_spec(migration_id="m2"), "alice", start=True)
    # Once the first is rolled back the alias is free again.
    await world.service.act(MIGRATION_ID, lambda now: Rollback("alice", "bad"), "alice", if_match=None)
    again = await world.service.create(_spec(migration_id="m2"), "alice", start=True)
    assert again.state["phase"] == "shadow"


async def test_create_validates_alias_and_providers() -> None:
    world = World()
    with pytest.raises(MigrationError, match="unknown model alias 'nope'") as caught:
        await world.service.create(_spec(alias="nope"), "alice", start=True)
    assert (caught.value.status, caught.value.code) == (400, "invalid_migration")
    with pytest.raises(MigrationError, match=re.escape("candidate.provider: unknown provider 'ghost'")):
        await world.service.create(_spec(candidate={"provider": "ghost", "model": "x"}), "alice", start=True)
    assert await world.service.list() == []


async def test_act_checks_if_match_and_refuses_events_out_of_phase() -> None:
    world = World()
    await world.service.create(_spec(), "alice", start=True)
    with pytest.raises(MigrationConflict, match="is at version 1, not 0; re-read and retry"):
        await world.service.act(MIGRATION_ID, lambda now: Pause("alice", "x"), "alice", if_match=0)
    with pytest.raises(MigrationConflict, match="Resume rejected in phase shadow: the migration is not paused"):
        await world.service.act(MIGRATION_ID, lambda now: Resume(now), "alice", if_match=1)
    with pytest.raises(MigrationNotFound) as missing:
        await world.service.act("ghost", lambda now: Resume(now), "alice", if_match=None)
    assert missing.value.status == 404
    assert await world.version() == 1 and len(await world.service.history(MIGRATION_ID)) == 2

    world.clock.now = 1_005.0
    paused = await world.service.act(MIGRATION_ID, lambda now: Pause("alice", "x"), "alice", if_match=1)
    assert (paused.version, paused.state["phase"]) == (2, "paused")
    # Without If-Match the current version is taken as it is.
    resumed = await world.service.act(MIGRATION_ID, lambda now: Resume(now, "alice"), "alice", if_match=None)
    assert (resumed.version, resumed.state["phase"], resumed.state["step_started_at"]) == (3, "shadow", 1_005.0)
    assert world.runtime.migrations()[MIGRATION_ID][1].version == 3
    last = (await world.service.history(MIGRATION_ID))[-1]
    assert (last["action"], last["version"], last["from_phase"], last["to_phase"]) == ("Resume", 3, "paused", "shadow")


async def test_a_tick_that_holds_the_step_is_audited_without_a_version_bump() -> None:
    world = World()
    await world.service.create(_spec(), "alice", start=True)
    world.clock.now = 1_002.0
    verdict = await world.service.tick(MIGRATION_ID)
    assert verdict is not None and verdict.result == "inconclusive"
    assert await world.version() == 1 and await world.phase() == "shadow"
    tick = (await world.service.history(MIGRATION_ID))[-1]
    assert (tick["kind"], tick["action"], tick["actor"], tick["version"]) == ("tick", "Tick", "controller", 1)
    assert tick["from_phase"] == tick["to_phase"] == "shadow"
    assert tick["verdict"]["reason"] == verdict.reason
    assert "candidate has 0/5 samples" in tick["reason"]
    assert world.sample(
        "cutover_migration_verdicts_total", migration=MIGRATION_ID, gate="error_rate", result="inconclusive"
    ) == 1


async def test_a_passing_tick_advances_and_audits_the_verdict_with_the_transition() -> None:
    world = World()
    await world.service.create(_spec(), "alice", start=True)
    # Enough answers to show p99 under its threshold and errors under 2 % at alpha 0.005.
    await world.feed([OK] * 5, [OK] * 1000)
    world.clock.now = 1_010.0
    verdict = await world.service.tick(MIGRATION_ID)
    assert verdict is not None and verdict.result == "pass"
    stored = await world.service.get(MIGRATION_ID)
    assert (stored.version, stored.state["phase"], stored.state["candidate_weight_bp"]) == (2, "canary", 2500)
    assert stored.state["step_started_at"] == 1_010.0
    tick, moved = (await world.service.history(MIGRATION_ID))[-2:]
    assert (tick["kind"], tick["version"], moved["kind"], moved["action"], moved["version"]) == (
        "tick", 1, "transition", "Tick", 2,
    )
    assert tick["verdict"] == moved["verdict"] == verdict.to_dict()
    # The runtime follows at once, with a fresh window for the new step.
    state = world.runtime.migrations()[MIGRATION_ID][1]
    assert (state.phase, state.version) == ("canary", 2)
    window = world.runtime.local_window(MIGRATION_ID)
    assert window is not None and window.started_at == 1_010.0 and window.candidate.requests == 0
    assert world.sample(
        "cutover_migration_transitions_total", migration=MIGRATION_ID, event="Tick", to_phase="canary"
    ) == 1


async def test_a_critical_tick_rolls_back_at_once_and_stops_the_shadow() -> None:
    world = World()
    await world.service.create(_spec(), "alice", start=True)
    await world.feed([OK] * 20, [Sample("error")] * 20)
    world.clock.now = 1_001.0  # far from min_step_s: the guard does not wait
    verdict = await world.service.tick(MIGRATION_ID)
    assert verdict is not None and verdict.critical
    stored = await world.service.get(MIGRATION_ID)
    assert stored.state["phase"] == "rolled_back" and stored.state["shadow_percent"] == 0.0
    assert world.stopped_shadows == [MIGRATION_ID]
    assert world.sample(
        "cutover_migration_rollbacks_total", migration=MIGRATION_ID, reason="critical_error_ratio"
    ) == 1
    # Nothing left to analyse: a further tick is refused quietly and audits nothing.
    entries = len(await world.service.history(MIGRATION_ID))
    await world.service.tick(MIGRATION_ID)
    assert len(await world.service.history(MIGRATION_ID)) == entries


async def test_a_manual_rollback_is_counted_as_manual() -> None:
    world = World()
    await world.service.create(_spec(), "alice", start=True)
    promoted = await world.service.act(MIGRATION_ID, lambda now: Promote(now, "alice"), "alice", if_match=1)
    # Leaving the shadow phase stops its copies; canary step 0 has none left to stop.
    assert (promoted.state["phase"], promoted.state["shadow_percent"]) == ("canary", 0.0)
    assert world.stopped_shadows == [MIGRATION_ID]
    await world.service.act(MIGRATION_ID, lambda now: Rollback("alice", "no"), "alice", if_match=2)
    assert world.sample("cutover_migration_rollbacks_total", migration=MIGRATION_ID, reason="manual") == 1
    assert world.stopped_shadows == [MIGRATION_ID]


async def test_ensure_from_config_creates_resumes_and_reacts_to_spec_changes() -> None:
    store = MemoryStore()
    world = World(store)
    spec = _spec()
    await world.service.ensure_from_config(spec)
    stored = await world.service.get(MIGRATION_ID)
    assert (stored.version, stored.state["phase"]) == (1, "shadow")
    assert [(e["action"], e["actor"]) for e in await world.service.history(MIGRATION_ID)] == [
        ("Create", "config"), ("Start", "config"),
    ]

    # A new process with the same config resumes from the store: nothing is written.
    restarted = World(store)
    await restarted.service.ensure_from_config(spec)
    assert restarted.runtime.migrations()[MIGRATION_ID] == (spec, world.runtime.migrations()[MIGRATION_ID][1])
    assert len(await store.audit(MIGRATION_ID)) == 2 and await restarted.version() == 1

    # A plan edit carries the state on under the new numbers.
    edited = _spec(plan=fast_plan(min_step_s=20.0, max_step_s=200.0, min_samples=7))
    await restarted.service.ensure_from_config(edited)
    stored = await restarted.service.get(MIGRATION_ID)
    assert (stored.version, stored.state["phase"], stored.spec["plan"]["min_samples"]) == (2, "shadow", 7)
    updated = (await store.audit(MIGRATION_ID))[-1]
    assert (updated["action"], updated["version"], updated["from_phase"], updated["to_phase"]) == (
        "SpecUpdated", 2, "shadow", "shadow",
    )
    assert restarted.runtime.migrations()[MIGRATION_ID] == (edited, restarted.runtime.migrations()[MIGRATION_ID][1])

    # A rolled-back migration whose candidate changes in the config starts afresh.
    await restarted.service.act(MIGRATION_ID, lambda now: Rollback("ops", "bad"), "ops", if_match=None)
    restarted.clock.now = 2_000.0
    replaced = _spec(plan=edited.plan.model_dump(), candidate={"provider": "modern", "model": "newer"})
    await restarted.service.ensure_from_config(replaced)
    stored = await restarted.service.get(MIGRATION_ID)
    assert (stored.version, stored.state["phase"], stored.state["step_started_at"]) == (5, "shadow", 2_000.0)
    assert stored.spec["candidate"]["model"] == "newer"
    assert [e["action"] for e in await store.audit(MIGRATION_ID)][-3:] == ["Rollback", "SpecChanged", "Start"]
    changed = (await store.audit(MIGRATION_ID))[-2]
    assert (changed["from_phase"], changed["to_phase"], changed["version"]) == ("rolled_back", "pending", 4)
