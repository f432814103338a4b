"""The migration state machine: `transition(state, event, plan) -> (state, actions)`.

    pending --Start--> shadow --pass--> canary[0] --pass--> ... canary[last] --pass--> promoted
                         |                 |                        |                  |      |
                         +-----------------+--- fail x N in a row, -+------------------+      | safety window
                         |                 |    critical, Rollback  +--> rolled_back          v elapsed
                         |                 |                               --Retry-->    promoted, settled
                         +--- Pause, SetWeight, inconclusive past --+--> paused
                              max_step_s          (Resume goes back to the step it left)
    Abort from any unfinished phase -> aborted (terminal; rolled_back restarts only by Retry)

Phases and what the traffic looks like in them (weights in basis points):

    shadow       baseline serves all; `shadow_percent` copied to the candidate
    canary[i]    candidate serves weights[i]; at 100 % the old baseline gets the
                 post-promotion copy, so it keeps an arm to compare against
    promoted     candidate serves all; `post_promotion_shadow_percent` copied to the
                 baseline until `safety_window_s` has passed (then "settled")
    paused       weights frozen as they were, or as set by hand; no analysis
    rolled_back, aborted   baseline serves all, no shadow

The machine is pure: time arrives in events as `now`, seconds on one clock shared
by whoever ticks the migration (epoch seconds when replicas share the store, since
monotonic clocks are per process). The caller carries out the returned actions in
order: `SetWeights` (the alias's full routing, emitted when it changes),
`StopShadow` (cancel copies in flight), `StartWindow` (a new step: drop the old
window, count from `started_at`; verdicts must come from that window, a verdict
about another step is rejected), `RecordAudit` (exactly one per state change).
An event the phase does not expect raises `RejectedEvent`; `expects_tick` tells
the controller whether to keep ticking.

Choices worth knowing: setting a weight by hand moves the migration to `paused`
(so "automatic analysis off" is one phase, not a flag; `auto_analysis` is derived);
Resume re-enters the step it left with the plan's weight and a fresh window. After
promotion the gates keep running through the safety window, against the old
baseline's shadow share, and `consecutive_failures` failed checks roll back as in
any step; the window settles only on a check that does not fail.
`consecutive_failures` counts failed checks in a row: a check that passes or is
inconclusive starts the count again. `version` grows by one on every state change, for compare-and-set in
the store; a tick that changes nothing returns the very same state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from dataclasses import fields as dataclass_fields
from typing import Any

from config.migration import BASIS_POINTS, StepPlan
from migration.gates import Verdict
from migration.types import PHASES, Arm, Phase, StepPhase


class RejectedEvent(Exception):
    """The event makes no sense in the migration's current phase."""


@dataclass(frozen=True, slots=True)
class Resumable:
    phase: StepPhase
    step_index: int


@dataclass(frozen=True, slots=True)
class MigrationState:
    phase: Phase = "pending"
    # Canary step; 0 in every other phase.
    step_index: int = 0
    candidate_weight_bp: int = 0
    shadow_percent: float = 0.0
    step_started_at: float | None = None
    consecutive_failures: int = 0
    paused_from: Resumable | None = None
    version: int = 0
    reason: str = ""
    # Who paused it, while paused: "gates" (an analysis tick found the step inconclusive too
    # long) or the operator's name. Kept in the state, so it survives a restart.
    paused_by: str = ""

    @property
    def settled(self) -> bool:
        return self.phase == "promoted" and self.shadow_percent == 0

    @property
    def auto_analysis(self) -> bool:
        return expects_tick(self)

    @property
    def shadow_to(self) -> Arm:
        """Which arm the shadow copies go to: the one not serving the copied requests."""
        phase = self.paused_from.phase if self.paused_from else self.phase
        return "candidate" if phase == "shadow" else "baseline"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MigrationState:
        # Keys this version does not know are left out: replicas upgraded one at a time read
        # states written by a newer version (which may add a field) without failing.
        known = {f.name for f in dataclass_fields(cls)}
        fields = {key: value for key, value in data.items() if key in known}
        if fields["phase"] not in PHASES:
            raise ValueError(f"unknown migration phase {fields['phase']!r}")
        if fields.get("paused_from") is not None:
            fields["paused_from"] = Resumable(**fields["paused_from"])
        return cls(**fields)


def expects_tick(state: MigrationState) -> bool:
    return state.phase in ("shadow", "canary") or (state.phase == "promoted" and not state.settled)


@dataclass(frozen=True, slots=True)
class Start:
    now: float
    actor: str = "operator"


@dataclass(frozen=True, slots=True)
class Tick:
    verdict: Verdict
    now: float


@dataclass(frozen=True, slots=True)
class Pause:
    actor: str
    reason: str


@dataclass(frozen=True, slots=True)
class Resume:
    now: float
    actor: str = "operator"


@dataclass(frozen=True, slots=True)
class Promote:
    """Advance one step now, whatever the gates say."""

    now: float
    actor: str = "operator"


@dataclass(frozen=True, slots=True)
class PromoteFully:
    now: float
    actor: str = "operator"


@dataclass(frozen=True, slots=True)
class Abort:
    actor: str
    reason: str


@dataclass(frozen=True, slots=True)
class Rollback:
    actor: str
    reason: str


@dataclass(frozen=True, slots=True)
class SetWeight:
    weight_bp: int
    now: float
    actor: str = "operator"

    def __post_init__(self) -> None:
        if not 0 <= self.weight_bp <= BASIS_POINTS:
            raise ValueError(f"weight_bp must be within 0..{BASIS_POINTS}, got {self.weight_bp}")


@dataclass(frozen=True, slots=True)
class Retry:
    now: float
    actor: str = "operator"


Event = Start | Tick | Pause | Resume | Promote | PromoteFully | Abort | Rollback | SetWeight | Retry


@dataclass(frozen=True, slots=True)
class SetWeights:
    candidate_weight_bp: int
    shadow_percent: float
    shadow_to: Arm


@dataclass(frozen=True, slots=True)
class StopShadow:
    pass


@dataclass(frozen=True, slots=True)
class StartWindow:
    started_at: float


@dataclass(frozen=True, slots=True)
class RecordAudit:
    event: str
    actor: str
    from_phase: Phase
    to_phase: Phase
    step_index: int
    candidate_weight_bp: int
    shadow_percent: float
    reason: str
    verdict: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Action = SetWeights | StopShadow | StartWindow | RecordAudit
Transition = tuple[MigrationState, tuple[Action, ...]]


def _reject(state: MigrationState, event: Event, hint: str) -> RejectedEvent:
    where = f"{state.phase} step {state.step_index}" if state.phase == "canary" else state.phase
    return RejectedEvent(f"{type(event).__name__} rejected in phase {where}: {hint}")


def _first_step(plan: StepPlan) -> Resumable:
    return Resumable("shadow", 0) if plan.shadow_percent > 0 else Resumable("canary", 0)


def _next_step(step: Resumable, plan: StepPlan) -> Resumable:
    if step.phase == "shadow":
        return Resumable("canary", 0)
    if step.phase == "canary" and step.step_index + 1 < len(plan.weights):
        return Resumable("canary", step.step_index + 1)
    return Resumable("promoted", 0)


def _label(step: Resumable) -> str:
    return f"canary step {step.step_index}" if step.phase == "canary" else step.phase


def _enter(step: Resumable, now: float, plan: StepPlan, reason: str) -> MigrationState:
    if step.phase == "shadow":
        weight, shadow = 0, plan.shadow_percent
    elif step.phase == "canary":
        weight = plan.weights_bp[step.step_index]
        shadow = plan.post_promotion_shadow_percent if weight == BASIS_POINTS else 0.0
    else:
        weight, shadow = BASIS_POINTS, plan.post_promotion_shadow_percent
    return MigrationState(step.phase, step.step_index, weight, shadow, now, reason=reason)


def _change(
    old: MigrationState,
    new: MigrationState,
    event: Event,
    actor: str,
    verdict: Verdict | None = None,
    new_step: bool = False,
) -> Transition:
    """Stamp the new state's version and derive the actions from what changed."""
    new = replace(new, version=old.version + 1)
    actions: list[Action] = []
    routing = (new.candidate_weight_bp, new.shadow_percent, new.shadow_to)
    if routing != (old.candidate_weight_bp, old.shadow_percent, old.shadow_to):
        actions.append(SetWeights(*routing))
    if old.shadow_percent > 0 and new.shadow_percent == 0:
        actions.append(StopShadow())
    if new_step and new.step_started_at is not None:
        actions.append(StartWindow(new.step_started_at))
    verdict_dict = None if verdict is None else verdict.to_dict()
    routed = (new.step_index, new.candidate_weight_bp, new.shadow_percent, new.reason, verdict_dict)
    actions.append(RecordAudit(type(event).__name__, actor, old.phase, new.phase, *routed))
    return new, tuple(actions)


def _current(state: MigrationState) -> Resumable:
    """The step the migration is in, or was in before it was paused."""
    if state.paused_from is not None:
        return state.paused_from
    if state.phase == "shadow" or state.phase == "canary" or state.phase == "promoted":
        return Resumable(state.phase, state.step_index)
    raise AssertionError(f"phase {state.phase} has no step")


def _on_start(state: MigrationState, event: Start | Retry, plan: StepPlan) -> Transition:
    if isinstance(event, Start) and state.phase != "pending":
        raise _reject(state, event, "the migration has already started (a rolled-back one restarts by Retry)")
    if isinstance(event, Retry) and state.phase != "rolled_back":
        raise _reject(state, event, "only a rolled-back migration can be retried")
    verb = "started" if isinstance(event, Start) else "retried"
    entered = _enter(_first_step(plan), event.now, plan, f"{verb} by {event.actor}")
    return _change(state, entered, event, event.actor, new_step=True)


def _on_tick(state: MigrationState, event: Tick, plan: StepPlan) -> Transition:
    if not expects_tick(state):
        hint = "the safety window is over, nothing left to analyse" if state.settled else "no analysis runs now"
        raise _reject(state, event, hint)
    verdict, now = event.verdict, event.now
    if verdict.step_started_at != state.step_started_at:
        stale = f"verdict is about the step started at {verdict.step_started_at}, not {state.step_started_at}"
        raise _reject(state, event, stale)
    assert state.step_started_at is not None
    held = now - state.step_started_at
    if verdict.critical:
        reason = f"rolled back at once: {verdict.reason}"
        return _change(state, MigrationState("rolled_back", reason=reason), event, "gates", verdict)
    if verdict.result == "fail":
        failures = state.consecutive_failures + 1
        if failures >= plan.consecutive_failures:
            reason = f"{failures} failed checks in a row: {verdict.reason}"
            return _change(state, MigrationState("rolled_back", reason=reason), event, "gates", verdict)
        reason = f"check failed ({failures}/{plan.consecutive_failures} in a row): {verdict.reason}"
        return _change(state, replace(state, consecutive_failures=failures, reason=reason), event, "gates", verdict)
    # Neither failed: the count of failed checks in a row starts again.
    if state.phase == "promoted":
        if held >= plan.safety_window_s:
            reason = f"safety window of {plan.safety_window_s:.0f} s over"
            settled = replace(state, shadow_percent=0.0, consecutive_failures=0, reason=reason)
            return _change(state, settled, event, "gates", verdict)
        return _reset_failures(state, event, verdict)
    if verdict.result == "pass" and held >= plan.min_step_s:
        step = _next_step(_current(state), plan)
        reason = f"gates passed after {held:.0f} s in {_label(_current(state))}"
        return _change(state, _enter(step, now, plan, reason), event, "gates", verdict, new_step=True)
    if verdict.result == "inconclusive" and held >= plan.max_step_s:
        reason = f"inconclusive after {held:.0f} s (max_step_s {plan.max_step_s:.0f}): {verdict.reason}"
        paused = replace(state, phase="paused", paused_from=_current(state), reason=reason, paused_by="gates",
                         consecutive_failures=0)
        return _change(state, paused, event, "gates", verdict)
    return _reset_failures(state, event, verdict)


def _reset_failures(state: MigrationState, event: Tick, verdict: Verdict) -> Transition:
    if not state.consecutive_failures:
        return state, ()
    reason = f"check {'passed' if verdict.result == 'pass' else 'inconclusive'}: failure count reset"
    return _change(state, replace(state, consecutive_failures=0, reason=reason), event, "gates", verdict)


def _on_pause(state: MigrationState, event: Pause, plan: StepPlan) -> Transition:
    if not expects_tick(state):
        raise _reject(state, event, "only a running migration can be paused")
    reason = f"paused by {event.actor}: {event.reason}"
    paused = replace(state, phase="paused", paused_from=_current(state), reason=reason, paused_by=event.actor)
    return _change(state, paused, event, event.actor)


def _on_resume(state: MigrationState, event: Resume, plan: StepPlan) -> Transition:
    if state.phase != "paused" or state.paused_from is None:
        raise _reject(state, event, "the migration is not paused")
    step = state.paused_from
    resumed = _enter(step, event.now, plan, f"resumed {_label(step)} by {event.actor}")
    return _change(state, resumed, event, event.actor, new_step=True)


def _promotable(state: MigrationState, event: Promote | PromoteFully) -> Resumable:
    if state.phase in ("shadow", "canary") or (state.phase == "paused" and state.paused_from is not None):
        step = _current(state)
        if step.phase != "promoted":
            return step
        raise _reject(state, event, "the candidate is already promoted; Resume continues the safety window")
    raise _reject(state, event, "only a migration in shadow, canary or paused can be promoted")


def _on_promote(state: MigrationState, event: Promote, plan: StepPlan) -> Transition:
    step = _next_step(_promotable(state, event), plan)
    entered = _enter(step, event.now, plan, f"promoted to {_label(step)} by {event.actor}")
    return _change(state, entered, event, event.actor, new_step=True)


def _on_promote_fully(state: MigrationState, event: PromoteFully, plan: StepPlan) -> Transition:
    _promotable(state, event)
    entered = _enter(Resumable("promoted", 0), event.now, plan, f"promoted fully by {event.actor}")
    return _change(state, entered, event, event.actor, new_step=True)


def _on_abort(state: MigrationState, event: Abort, plan: StepPlan) -> Transition:
    if state.phase == "aborted" or state.settled:
        raise _reject(state, event, "the migration is already finished")
    return _change(
        state, MigrationState("aborted", reason=f"aborted by {event.actor}: {event.reason}"), event, event.actor
    )


def _on_rollback(state: MigrationState, event: Rollback, plan: StepPlan) -> Transition:
    if state.phase in ("pending", "rolled_back", "aborted"):
        raise _reject(state, event, "the candidate serves no traffic to roll back")
    reason = f"rolled back by {event.actor}: {event.reason}"
    return _change(state, MigrationState("rolled_back", reason=reason), event, event.actor)


def _on_set_weight(state: MigrationState, event: SetWeight, plan: StepPlan) -> Transition:
    if not (expects_tick(state) or state.phase == "paused"):
        raise _reject(state, event, "weights can be set only while the migration runs or is paused")
    reason = f"weight set to {event.weight_bp} bp by {event.actor}; automatic analysis paused"
    paused = replace(
        state, phase="paused", paused_from=_current(state), candidate_weight_bp=event.weight_bp, reason=reason,
        paused_by=event.actor,
    )
    return _change(state, paused, event, event.actor)


_HANDLERS: dict[type[Any], Callable[[MigrationState, Any, StepPlan], Transition]] = {
    Start: _on_start,
    Tick: _on_tick,
    Pause: _on_pause,
    Resume: _on_resume,
    Promote: _on_promote,
    PromoteFully: _on_promote_fully,
    Abort: _on_abort,
    Rollback: _on_rollback,
    SetWeight: _on_set_weight,
    Retry: _on_start,
}


def transition(state: MigrationState, event: Event, plan: StepPlan) -> Transition:
    """Apply one event; raises RejectedEvent when the current phase does not expect it."""
    handler = _HANDLERS.get(type(event))
    if handler is None:
        raise TypeError(f"not a migration event: {event!r}")
    return handler(state, event, plan)
