"""What this gateway process knows about its migrations, in memory; no I/O.

Per request (hot path): `decide` says which arm serves, in which target order,
and whether a shadow copy goes out; `record` notes how the request counted for
its arm. The states are adopted with `apply`, from the store (migration.sync) or
from a change just committed here (migration.service); each adoption is exported
as the phase and weight gauges. `fold` turns the samples noted since the last
fold into this process's window of the current step, which migration.sync pushes
to the store for the controller to pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from config.migration import MigrationSpec, ShadowSettings
from migration.compare import request_tool_names
from migration.quality import QualityCounts
from migration.rollout import MigrationState
from migration.split import choose_arm, names_excluded_tool, should_shadow, sticky_key
from migration.types import PHASES, Arm
from migration.window import ArmWindow, Kind, Sample, StepWindow, merge
from providers.target import TargetRef
from routing.table import Route
from telemetry.migration_metrics import MigrationMetrics


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
    # This process's samples (one per request) and attempts (one per upstream call) since the last fold.
    pending: dict[Arm, list[Sample]] = field(default_factory=lambda: {"baseline": [], "candidate": []})
    pending_attempts: dict[Arm, list[Kind]] = field(default_factory=lambda: {"baseline": [], "candidate": []})
    pending_pairs: list[tuple[int, int]] = field(default_factory=list)
    pending_quality: list[tuple[Arm, QualityCounts]] = field(default_factory=list)
    window: StepWindow | None = None


def _target(spec_target: Any) -> TargetRef:
    return TargetRef(spec_target.provider, spec_target.model)


def _pairs_in_canary(spec: MigrationSpec, state: MigrationState) -> bool:
    return state.phase == "canary" and spec.gates.quality.canary_pair_share > 0


def is_running(state: MigrationState) -> bool:
    """Still moving traffic between arms; a settled promotion is finished (it keeps serving the candidate)."""
    return state.phase in ("shadow", "canary", "paused") or (state.phase == "promoted" and not state.settled)


class LiveMigrations:
    def __init__(self, metrics: MigrationMetrics, rng: Callable[[], float] = random.random) -> None:
        self._metrics = metrics
        self._rng = rng
        self._live: dict[str, _Live] = {}
        self._by_alias: dict[str, str] = {}
        self._kills: frozenset[str] = frozenset()
        # Until the first read of the store, this process cannot know which arm a sticky user belongs to
        # (a migration may have moved on while it was down): nothing is routed before that.
        self.synced = False
        self._synced = asyncio.Event()

    # -- hot path -------------------------------------------------------------------------

    def mark_synced(self) -> None:
        self.synced = True
        self._synced.set()

    async def until_synced(self, timeout_s: float) -> bool:
        """Wait (bounded) for the first read of the store; False if it has not come."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), timeout_s)
        return self.synced

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
        wanted: Arm | None = None
        if state.shadow_percent > 0 and state.shadow_to != arm and state.phase != "paused":
            if should_shadow(state.shadow_percent, key, spec.sticky.salt, spec.id, self._rng):
                wanted = state.shadow_to
        elif (_pairs_in_canary(spec, state) and arm == "candidate"
              and self._rng() < spec.gates.quality.canary_pair_share):
            # A split sends each request to one arm: a sampled copy to the baseline keeps quality pairs flowing.
            wanted = "baseline"
        if wanted is not None:
            if names_excluded_tool(request_tool_names(payload), spec.shadow.exclude_tools):
                self._metrics.shadow_requests.labels(spec.id, "excluded").inc()
            else:
                shadow_arm = wanted
        shadow_target = None if shadow_arm is None else (live.candidate if shadow_arm == "candidate" else live.baseline)
        return Decision(spec.id, arm, targets, arm_target, shadow_target, shadow_arm, state.step_started_at)

    def shadow_settings(self, migration_id: str) -> ShadowSettings:
        return self._live[migration_id].spec.shadow

    def spec_of(self, migration_id: str) -> MigrationSpec | None:
        live = self._live.get(migration_id)
        return None if live is None else live.spec

    def shadow_allowed(self, decision: Decision) -> bool:
        """Still wanted now? A rollback between the decision and the copy stops it."""
        live = self._live.get(decision.migration_id)
        return (
            live is not None
            and live.state.step_started_at == decision.step_started_at
            and (live.state.shadow_percent > 0 or _pairs_in_canary(live.spec, live.state))
        )

    def record(self, decision: Decision, arm: Arm, sample: Sample | None, attempts: Sequence[Kind] = ()) -> None:
        """One request of the arm as its client saw it (None: the client's own fault), and every upstream
        attempt it made on the arm's target."""
        live = self._live.get(decision.migration_id)
        # Samples of a step that has ended since the decision belong to no window.
        if live is not None and live.state.step_started_at == decision.step_started_at:
            if sample is not None:
                live.pending[arm].append(sample)
            live.pending_attempts[arm].extend(attempts)

    def record_pair(self, decision: Decision, candidate_micros: int, baseline_micros: int) -> None:
        live = self._live.get(decision.migration_id)
        if live is not None and live.state.step_started_at == decision.step_started_at:
            live.pending_pairs.append((candidate_micros, baseline_micros))

    def record_quality(self, decision: Decision, arm: Arm, counts: QualityCounts) -> None:
        """Checked answers (and, on the candidate arm, checked or judged pairs) of the decision's step."""
        live = self._live.get(decision.migration_id)
        if live is not None and live.state.step_started_at == decision.step_started_at:
            live.pending_quality.append((arm, counts))

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

    def set_kill_switches(self, aliases: Iterable[str]) -> None:
        self._kills = frozenset(aliases)

    def local_window(self, migration_id: str) -> StepWindow | None:
        """This process's window of the migration's current step, every sample noted so far folded in."""
        live = self._live.get(migration_id)
        if live is None:
            return None
        self._fold(live)
        return live.window

    def fold_all(self) -> dict[str, StepWindow]:
        """Every migration's local window of its current step, for the store."""
        windows = {}
        for migration_id, live in list(self._live.items()):
            self._fold(live)
            if live.window is not None:
                windows[migration_id] = live.window
        return windows

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
            live.pending_attempts = {"baseline": [], "candidate": []}
            live.pending_pairs = []
            live.pending_quality = []
            live.window = None
        live.state = state
        current = self._by_alias.get(spec.alias)
        # An alias follows its running migration; a finished one only until another starts.
        if current is None or current == spec.id or not is_running(self._live[current].state):
            self._by_alias[spec.alias] = spec.id
        self._export(spec.id, state)

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
            samples, attempts = live.pending[arm], live.pending_attempts[arm]
            if samples or attempts:
                live.pending[arm], live.pending_attempts[arm] = [], []
                window = window.with_arm(arm, merge(window.arm(arm), ArmWindow.of(samples, attempts=attempts)))
        pairs, live.pending_pairs = live.pending_pairs, []
        for candidate_micros, baseline_micros in pairs:
            window = window.plus_pair(candidate_micros, baseline_micros)
        quality, live.pending_quality = live.pending_quality, []
        for arm, counts in quality:
            window = window.plus_quality(arm, counts)
        live.window = window

    def step_started_at(self, migration_id: str) -> float | None:
        live = self._live.get(migration_id)
        return None if live is None else live.state.step_started_at
