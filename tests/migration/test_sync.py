"""StoreSync: this replica's windows pushed, states and kill switches pulled, a store outage survived."""

from __future__ import annotations

from typing import Any

from config.migration import MigrationSpec
from migration.live import LiveMigrations
from migration.rollout import MigrationState
from migration.sync import StoreSync, step_key
from migration.window import ArmWindow, Sample, StepWindow
from providers.target import TargetRef
from routing.table import Route
from store.base import StoredMigration
from store.memory import MemoryStore
from telemetry.metrics import Metrics
from tests.migration.support import ALIAS, MIGRATION_ID, fast_plan, migration_spec

BASE = TargetRef("legacy", "old")
BACKUP = TargetRef("backup", "spare")
ROUTE = Route(ALIAS, (BASE, BACKUP), "error")
SPEC = MigrationSpec.model_validate(migration_spec(plan=fast_plan(), shadow={"exclude_tools": ["send_email"]}))
OK = Sample("ok", 10.0, None, 100)


def _state(phase: str, weight_bp: int = 0, shadow: float = 0.0, started: float | None = 100.0, version: int = 1,
           **fields: Any) -> MigrationState:
    return MigrationState(phase, 0, weight_bp, shadow, started, version=version, **fields)  # type: ignore[arg-type]


def _sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_sync_pushes_windows_pulls_states_and_survives_a_store_outage() -> None:
    store, metrics = MemoryStore(), Metrics()
    runtime = LiveMigrations(metrics.migration, rng=lambda: 0.5)
    sync = StoreSync(store, runtime, metrics.migration, "replica-a")
    state = _state("canary", weight_bp=10_000)
    runtime.apply(SPEC, state)
    decision = runtime.decide(ROUTE, {"user": "u1"}, None, None)
    assert decision is not None
    runtime.record(decision, "candidate", OK)
    runtime.record(decision, "baseline", OK)

    # Another replica's window of the same step, already in the store.
    theirs = StepWindow(100.0, ArmWindow.of([OK, OK]), ArmWindow.of([Sample("error")]))
    await store.put_window(MIGRATION_ID, step_key(100.0), "replica-b", theirs.to_dict())
    newer = _state("canary", weight_bp=10_000, version=2, reason="from another replica")
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
    assert _sample(metrics, "cutover_store_up", {}) == 0
    # Still serving with the last state it saw.
    decision = runtime.decide(ROUTE, {"user": "u1"}, None, None)
    assert decision is not None and decision.arm == "candidate"
    store.available = True
    assert await sync.sync() is True
    assert sync.store_ok and _sample(metrics, "cutover_store_up", {}) == 1
