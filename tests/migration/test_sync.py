"""StoreSync: this replica's windows pushed, states and kill switches pulled, a store outage survived."""

from __future__ import annotations

from migration.live import LiveMigrations
from migration.sync import StoreSync, step_key
from migration.window import ArmWindow, Sample, StepWindow
from store.base import StoredMigration
from store.memory import MemoryStore
from telemetry.metrics import Metrics
from tests.migration.support import MIGRATION_ID
from tests.migration.values import OK, ROUTE, SPEC, migration_state, sample


async def test_sync_pushes_windows_pulls_states_and_survives_a_store_outage() -> None:
    store, metrics = MemoryStore(), Metrics()
    runtime = LiveMigrations(metrics.migration, rng=lambda: 0.5)
    sync = StoreSync(store, runtime, metrics.migration, "replica-a")
    state = migration_state("canary", weight_bp=10_000)
    runtime.apply(SPEC, state)
    decision = runtime.decide(ROUTE, {"user": "u1"}, None, None)
    assert decision is not None
    runtime.record(decision, "candidate", OK)
    runtime.record(decision, "baseline", OK)

    # Another replica's window of the same step, already in the store.
    theirs = StepWindow(100.0, ArmWindow.of([OK, OK]), ArmWindow.of([Sample("error")]))
    await store.put_window(MIGRATION_ID, step_key(100.0), "replica-b", theirs.to_dict())
    newer = migration_state("canary", weight_bp=10_000, version=2, reason="from another replica")
    await store.create_migration(
        StoredMigration(MIGRATION_ID, SPEC.model_dump(mode="json"), newer.to_dict(), 2), []
    )
    await store.set_kill_switch("some-alias", True)

    assert await sync.sync() is True
    assert sync.store_ok and sync.last_sync_at is not None
    assert runtime.migrations()[MIGRATION_ID][1] == newer
    assert runtime.kill_switches() == frozenset({"some-alias"})
    stored = [StepWindow.from_dict(d) for d in await store.windows(MIGRATION_ID, step_key(100.0))]
    mine = StepWindow(100.0, ArmWindow.of([OK]), ArmWindow.of([OK]))
    assert sorted(stored, key=lambda w: w.baseline.requests) == [mine, theirs]
    pooled = await sync.pooled_window(MIGRATION_ID)
    assert pooled is not None
    assert (pooled.baseline.requests, pooled.candidate.requests, pooled.candidate.errors) == (3, 2, 1)

    store.available = False
    assert await sync.sync() is False
    assert sync.store_ok is False
    assert sample(metrics, "cutover_store_up", {}) == 0
    # Still serving with the last state it saw.
    decision = runtime.decide(ROUTE, {"user": "u1"}, None, None)
    assert decision is not None and decision.arm == "candidate"
    store.available = True
    assert await sync.sync() is True
    assert sync.store_ok and sample(metrics, "cutover_store_up", {}) == 1
