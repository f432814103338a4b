"""Every change to a migration goes through here: operators' commands and the controller's ticks.

A change is: load the stored migration, check the caller's version (If-Match),
run the pure state machine, then compare-and-set the new state together with its
audit records. A stale version or an event the phase does not expect is refused,
never half-applied. The new state is adopted locally at once; other replicas
pick it up on their next sync.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from config.migration import MigrationSpec
from migration.gates import Verdict, evaluate
from migration.live import LiveMigrations, is_running
from migration.rollout import Event, MigrationState, RecordAudit, RejectedEvent, Start, StopShadow, Tick, transition
from migration.sync import StoreSync
from migration.window import step_since
from store.base import Store, StoredMigration
from telemetry.migration_metrics import MigrationMetrics


class MigrationError(Exception):
    status = 400
    code = "invalid_migration"


class MigrationNotFound(MigrationError):
    status = 404
    code = "migration_not_found"


class MigrationConflict(MigrationError):
    status = 409
    code = "conflict"


def utc_now_iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")


def audit_entry(record: RecordAudit, version: int, now: float) -> dict[str, Any]:
    entry = record.to_dict()
    return {
        "time": utc_now_iso(now),
        "kind": "transition",
        "action": entry.pop("event"),
        "version": version,
        **entry,
    }


def state_entry(
    kind: str, action: str, actor: str, before: MigrationState, after: MigrationState, reason: str, now: float,
    verdict: Verdict | None = None,
) -> dict[str, Any]:
    """An audit record for changes the state machine does not describe itself (ticks, spec edits)."""
    return {
        "time": utc_now_iso(now),
        "kind": kind,
        "action": action,
        "actor": actor,
        "version": after.version,
        "from_phase": before.phase,
        "to_phase": after.phase,
        "step_index": after.step_index,
        "candidate_weight_bp": after.candidate_weight_bp,
        "shadow_percent": after.shadow_percent,
        "reason": reason,
        "verdict": None if verdict is None else verdict.to_dict(),
    }


class MigrationService:
    def __init__(
        self,
        store: Store,
        live: LiveMigrations,
        sync: StoreSync,
        metrics: MigrationMetrics,
        known_aliases: Callable[[], Mapping[str, Any]],
        known_providers: Callable[[], Mapping[str, Any]],
        on_stop_shadow: Callable[[str], None] = lambda _id: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.live = live
        self._sync = sync
        self._metrics = metrics
        self._aliases = known_aliases
        self._providers = known_providers
        self._on_stop_shadow = on_stop_shadow
        self._clock = clock

    def validate(self, spec: MigrationSpec) -> None:
        if spec.alias not in self._aliases():
            raise MigrationError(f"unknown model alias '{spec.alias}'")
        for arm in ("baseline", "candidate"):
            provider = getattr(spec, arm).provider
            if provider not in self._providers():
                raise MigrationError(f"{arm}.provider: unknown provider '{provider}'")

    async def get(self, migration_id: str) -> StoredMigration:
        stored = await self.store.get_migration(migration_id)
        if stored is None:
            raise MigrationNotFound(f"no migration '{migration_id}'")
        return stored

    async def list(self) -> builtins.list[StoredMigration]:
        return await self.store.list_migrations()

    async def history(self, migration_id: str) -> builtins.list[dict[str, Any]]:
        await self.get(migration_id)
        return await self.store.audit(migration_id)

    async def record(self, migration_id: str, entry: dict[str, Any]) -> None:
        """An audit record that changes no state (a pre-flight replay)."""
        await self.get(migration_id)
        await self.store.append_audit(migration_id, [entry])

    async def create(self, spec: MigrationSpec, actor: str, start: bool) -> StoredMigration:
        self.validate(spec)
        for other in await self.store.list_migrations():
            state = MigrationState.from_dict(other.state)
            if other.spec.get("alias") == spec.alias and other.id != spec.id and is_running(state):
                raise MigrationConflict(f"alias '{spec.alias}' already has a running migration '{other.id}'")
        now = self._clock()
        state = MigrationState()
        created = state_entry("transition", "Create", actor, state, state, f"created by {actor}", now)
        stored = StoredMigration(spec.id, spec.model_dump(mode="json"), state.to_dict(), state.version)
        if not await self.store.create_migration(stored, [created]):
            raise MigrationConflict(f"migration '{spec.id}' exists already")
        self.live.apply(spec, state)
        if start:
            return await self.act(spec.id, lambda now: Start(now, actor=actor), actor, if_match=state.version)
        return stored

    async def ensure_from_config(self, spec: MigrationSpec) -> None:
        """A migration declared in the config: created and started once, then resumed from the store.
        A changed candidate starts it afresh (the only way besides Retry to restart a rolled-back one)."""
        stored = await self.store.get_migration(spec.id)
        if stored is None:
            try:
                await self.create(spec, "config", start=True)
            except MigrationConflict:
                pass  # another worker created it first
            return
        stored_spec = MigrationSpec.model_validate(stored.spec)
        state = MigrationState.from_dict(stored.state)
        if stored_spec.candidate != spec.candidate or stored_spec.baseline != spec.baseline:
            fresh = MigrationState(version=state.version + 1)
            now = self._clock()
            entry = state_entry(
                "transition", "SpecChanged", "config", state, fresh,
                "baseline or candidate changed in the config; the migration starts afresh", now,
            )
            replaced = StoredMigration(spec.id, spec.model_dump(mode="json"), fresh.to_dict(), fresh.version)
            if await self.store.commit(replaced, stored.version, [entry]):
                self.live.apply(spec, fresh)
                await self.act(spec.id, lambda t: Start(t, actor="config"), "config", if_match=fresh.version)
            return
        if stored_spec != spec:
            # Plan, gates or shadow settings edited: the state carries on under the new numbers.
            bumped = MigrationState.from_dict({**state.to_dict(), "version": state.version + 1})
            entry = state_entry(
                "transition", "SpecUpdated", "config", state, bumped,
                "plan, gates or shadow settings changed in the config", self._clock(),
            )
            updated = StoredMigration(spec.id, spec.model_dump(mode="json"), bumped.to_dict(), bumped.version)
            if await self.store.commit(updated, stored.version, [entry]):
                stored_spec, state = spec, bumped
        self.live.apply(stored_spec, state)

    async def act(
        self, migration_id: str, make_event: Callable[[float], Event], actor: str, if_match: int | None
    ) -> StoredMigration:
        stored = await self.get(migration_id)
        if if_match is not None and if_match != stored.version:
            raise MigrationConflict(
                f"migration '{migration_id}' is at version {stored.version}, not {if_match}; re-read and retry"
            )
        spec = MigrationSpec.model_validate(stored.spec)
        state = MigrationState.from_dict(stored.state)
        now = self._clock()
        try:
            new, actions = transition(state, make_event(now), spec.plan)
        except RejectedEvent as exc:
            raise MigrationConflict(str(exc)) from None
        return await self._commit(stored, spec, state, new, actions, now, extra_audit=[])

    async def tick(self, migration_id: str) -> Verdict | None:
        """One analysis: pooled windows (the step and its recent block) -> gates -> state machine; all audited."""
        stored = await self.get(migration_id)
        spec = MigrationSpec.model_validate(stored.spec)
        state = MigrationState.from_dict(stored.state)
        self.live.apply(spec, state)
        window = await self._sync.pooled_window(migration_id)
        if window is None:
            return None
        now = self._clock()
        block = await self._sync.recent_block(migration_id, window, now, spec.plan.recent_window_s)
        verdict = evaluate(window, spec.gates, spec.plan, now, step_since(window, block.start), block.index,
                           block.started_at)
        for gate in verdict.gates:
            name = gate.gate if gate.scope == "step" else f"{gate.gate}_recent"
            self._metrics.verdicts.labels(migration_id, name, gate.result).inc()
        try:
            new, actions = transition(state, Tick(verdict, now), spec.plan)
        except RejectedEvent:
            return verdict  # the state moved on (an operator acted) since this window was read
        ticked = state_entry("tick", "Tick", "controller", state, state, verdict.reason, now, verdict)
        if new is state:
            await self.store.append_audit(migration_id, [ticked])
            return verdict
        await self._commit(stored, spec, state, new, actions, now, extra_audit=[ticked], verdict=verdict)
        return verdict

    async def _commit(
        self,
        stored: StoredMigration,
        spec: MigrationSpec,
        old: MigrationState,
        new: MigrationState,
        actions: tuple[Any, ...],
        now: float,
        extra_audit: builtins.list[dict[str, Any]],
        verdict: Verdict | None = None,
    ) -> StoredMigration:
        audit = extra_audit + [audit_entry(a, new.version, now) for a in actions if isinstance(a, RecordAudit)]
        updated = StoredMigration(stored.id, stored.spec, new.to_dict(), new.version)
        if not await self.store.commit(updated, stored.version, audit):
            raise MigrationConflict(f"migration '{stored.id}' changed meanwhile; re-read and retry")
        self.live.apply(spec, new)
        if any(isinstance(a, StopShadow) for a in actions):
            self._on_stop_shadow(stored.id)
        for record in (a for a in actions if isinstance(a, RecordAudit)):
            self._metrics.transitions.labels(stored.id, record.event, record.to_phase).inc()
        if new.phase == "rolled_back" and old.phase != "rolled_back":
            self._metrics.rollbacks.labels(stored.id, rollback_cause(verdict)).inc()
        return updated


def rollback_cause(verdict: Verdict | None) -> str:
    """A bounded label: the first failing gate, or 'manual'."""
    if verdict is None:
        return "manual"
    for gate in verdict.gates:
        if gate.result == "fail":
            return gate.gate
    return "critical" if verdict.critical else "gates"
