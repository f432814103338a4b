"""What one gateway process knows about migrations, and what it has seen of them.

Per request (hot path, no I/O): `decide` says which arm serves, in which target
order, and whether a shadow copy goes out; `record` notes the outcome in memory.
Every `sync` (a background loop, `controller.sync_interval_s`): outcomes are folded
into this process's cumulative window for the current step and written to the
store under this replica's name, and migration states and kill switches are read
back. That loop is how a rollback decided anywhere reaches every replica, and why
a store outage leaves a replica serving with the last state it saw.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from config.migration import MigrationSpec
from migration.compare import request_tool_names
from migration.rollout import MigrationState
from migration.split import choose_arm, names_excluded_tool, should_shadow, sticky_key
from migration.types import PHASES, Arm
from migration.window import ArmWindow, Sample, StepWindow, merge, merge_steps
from routing.table import Route, TargetRef
from store.base import Store, StoreUnavailable
from telemetry.metrics import Metrics

_log = logging.getLogger("cutover.migration")


@dataclass(frozen=True, slots=True)
class Decision:
    migration_id: str
    arm: Arm
    # Serving order: the arm's target first, then the alias's other targets as fallbacks,
    # so a failing candidate costs the client nothing (its failure still counts against it).
    targets: tuple[TargetRef, ...]
    arm_target: TargetRef
    shadow_target: TargetRef | None
    shadow_arm: Arm | None
    step_started_at: float


@dataclass(slots=True)
class _Live:
    spec: MigrationSpec
    state: MigrationState
    baseline: TargetRef
    candidate: TargetRef
    sticky_header: bytes
    # This process's outcomes: folded into `window` on every sync.
    pending: dict[Arm, list[Sample]] = field(default_factory=lambda: {"baseline": [], "candidate": []})
    pending_pairs: list[tuple[int, int]] = field(default_factory=list)
    window: StepWindow | None = None


def _target(spec_target: Any) -> TargetRef:
    return TargetRef(spec_target.provider, spec_target.model)


class MigrationRuntime:
    def __init__(
        self, store: Store, metrics: Metrics, replica: str, rng: Callable[[], float] = random.random
    ) -> None:
        self.store = store
        self.replica = replica
        self._metrics = metrics
        self._rng = rng
        self._live: dict[str, _Live] = {}
        self._by_alias: dict[str, str] = {}
        self._kills: frozenset[str] = frozenset()
        self.store_ok = True
        self.last_sync_at: float | None = None

    # -- hot path -------------------------------------------------------------------------

    def sticky_header(self, alias: str) -> bytes | None:
        """The sticky-key header of the alias's migration; None when the alias has none (the fast path)."""
        migration_id = self._by_alias.get(alias)
        return None if migration_id is None else self._live[migration_id].sticky_header

    def decide(
        self, route: Route, payload: Mapping[str, Any], header_key: str | None, client_key: str | None
    ) -> Decision | None:
        migration_id = self._by_alias.get(route.alias)
        if migration_id is None or route.alias in self._kills:
            return None
        live = self._live[migration_id]
        state = live.state
        if state.phase in ("pending", "rolled_back", "aborted") or state.step_started_at is None:
            return None
        spec = live.spec
        user = payload.get("user")
        key = sticky_key(header_key, user if isinstance(user, str) else None, client_key)
        arm: Arm = choose_arm(state.candidate_weight_bp, key, spec.sticky.salt, spec.id, self._rng)
        arm_target = live.candidate if arm == "candidate" else live.baseline
        others = tuple(t for t in route.targets if t not in (live.baseline, live.candidate))
        targets = (arm_target, live.baseline, *others) if arm == "candidate" else (live.baseline, *others)
        shadow_arm: Arm | None = None
        if state.shadow_percent > 0 and state.shadow_to != arm and state.phase != "paused":
            if should_shadow(state.shadow_percent, key, spec.sticky.salt, spec.id, self._rng):
                if names_excluded_tool(request_tool_names(payload), spec.shadow.exclude_tools):
                    self._metrics.shadow_requests.labels(spec.id, "excluded").inc()
                else:
                    shadow_arm = state.shadow_to
        shadow_target = None if shadow_arm is None else (live.candidate if shadow_arm == "candidate" else live.baseline)
        return Decision(spec.id, arm, targets, arm_target, shadow_target, shadow_arm, state.step_started_at)

    def shadow_settings(self, migration_id: str) -> Any:
        return self._live[migration_id].spec.shadow

    def shadow_allowed(self, decision: Decision) -> bool:
        """Still wanted now? A rollback between the decision and the copy stops it."""
        live = self._live.get(decision.migration_id)
        return (
            live is not None
            and live.state.step_started_at == decision.step_started_at
            and live.state.shadow_percent > 0
        )

    def record(self, decision: Decision, arm: Arm, outcome: Sample) -> None:
        live = self._live.get(decision.migration_id)
        # Samples of a step that has ended since the decision belong to no window.
        if live is not None and live.state.step_started_at == decision.step_started_at:
            live.pending[arm].append(outcome)

    def record_pair(self, decision: Decision, candidate_micros: int, baseline_micros: int) -> None:
        live = self._live.get(decision.migration_id)
        if live is not None and live.state.step_started_at == decision.step_started_at:
            live.pending_pairs.append((candidate_micros, baseline_micros))

    # -- state ----------------------------------------------------------------------------

    def migrations(self) -> dict[str, tuple[MigrationSpec, MigrationState]]:
        return {mid: (live.spec, live.state) for mid, live in self._live.items()}

    def arms_of(self, alias: str) -> list[tuple[str, str]]:
        """(provider, upstream model) of both arms of the alias's live migration, if it has one."""
        return [
            (target.provider, target.model)
            for live in self._live.values() if live.spec.alias == alias
            for target in (live.spec.baseline, live.spec.candidate)
        ]

    def kill_switches(self) -> frozenset[str]:
        return self._kills

    def local_window(self, migration_id: str) -> StepWindow | None:
        live = self._live.get(migration_id)
        if live is None:
            return None
        self._fold(live)
        return live.window

    def apply(self, spec: MigrationSpec, state: MigrationState) -> None:
        """Adopt a state (read from the store, or just committed here)."""
        live = self._live.get(spec.id)
        if live is None or live.spec != spec:
            live = _Live(
                spec, state, _target(spec.baseline), _target(spec.candidate), spec.sticky.header.lower().encode()
            )
            self._live[spec.id] = live
        elif live.state.version > state.version:
            return  # never step back to an older state read from a lagging store
        if live.state.step_started_at != state.step_started_at:
            live.pending = {"baseline": [], "candidate": []}
            live.pending_pairs = []
            live.window = None
        live.state = state
        current = self._by_alias.get(spec.alias)
        # An alias follows its running migration; a finished one only until another starts.
        if current is None or current == spec.id or not is_running(self._live[current].state):
            self._by_alias[spec.alias] = spec.id
        self._export(spec.id, state)

    def set_kill_switches(self, aliases: Iterable[str]) -> None:
        self._kills = frozenset(aliases)

    def _export(self, migration_id: str, state: MigrationState) -> None:
        m = self._metrics
        for phase in PHASES:
            m.phase.labels(migration_id, phase).set(1 if phase == state.phase else 0)
        m.paused_by_gates.labels(migration_id).set(1 if state.phase == "paused" and state.paused_by == "gates" else 0)
        m.candidate_weight.labels(migration_id).set(state.candidate_weight_bp / 10_000)
        m.shadow_share.labels(migration_id).set(state.shadow_percent / 100)

    def _fold(self, live: _Live) -> None:
        started = live.state.step_started_at
        if started is None:
            return
        window = live.window if live.window is not None else StepWindow(started)
        for arm in ("baseline", "candidate"):
            outcomes = live.pending[arm]
            if outcomes:
                live.pending[arm] = []
                window = window.with_arm(arm, _plus_all(window.arm(arm), outcomes))
        pairs, live.pending_pairs = live.pending_pairs, []
        for candidate_micros, baseline_micros in pairs:
            window = window.plus_pair(candidate_micros, baseline_micros)
        live.window = window

    async def sync(self) -> bool:
        """Push this replica's windows, pull states and kill switches. False when the store is down."""
        try:
            for migration_id, live in list(self._live.items()):
                self._fold(live)
                if live.window is not None:
                    await self.store.put_window(
                        migration_id, step_key(live.window.started_at), self.replica, live.window.to_dict()
                    )
            stored = await self.store.list_migrations()
            kills = await self.store.kill_switches()
        except StoreUnavailable as exc:
            if self.store_ok:
                _log.warning("store unreachable; serving with the last known migration state",
                             extra={"fields": {"error": str(exc)}})
            self.store_ok = False
            self._metrics.store_up.set(0)
            return False
        for item in stored:
            try:
                self.apply(MigrationSpec.model_validate(item.spec), MigrationState.from_dict(item.state))
            except ValueError as exc:
                _log.error("unreadable migration in store", extra={"fields": {"id": item.id, "error": str(exc)}})
        self.set_kill_switches(kills)
        if not self.store_ok:
            _log.warning("store reachable again")
        self.store_ok = True
        self._metrics.store_up.set(1)
        self.last_sync_at = time.time()
        return True

    async def pooled_window(self, migration_id: str) -> StepWindow | None:
        """Every replica's window of the current step, merged (the controller's view)."""
        live = self._live.get(migration_id)
        if live is None or live.state.step_started_at is None:
            return None
        started = live.state.step_started_at
        window = StepWindow(started)
        for data in await self.store.windows(migration_id, step_key(started)):
            try:
                window = merge_steps(window, StepWindow.from_dict(data))
            except ValueError as exc:
                _log.error("unreadable window in store", extra={"fields": {"id": migration_id, "error": str(exc)}})
        return window


def step_key(started_at: float) -> str:
    return repr(started_at)


def is_running(state: MigrationState) -> bool:
    """Still moving traffic between arms; a settled promotion is finished (it keeps serving the candidate)."""
    return state.phase in ("shadow", "canary", "paused") or (state.phase == "promoted" and not state.settled)


def _plus_all(arm: ArmWindow, outcomes: list[Sample]) -> ArmWindow:
    return merge(arm, ArmWindow.of(outcomes))
