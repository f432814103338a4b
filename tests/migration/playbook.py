"""Playbooks for the rollout state machine: a state, an event, and everything that must come of it.

A case states what the machine must answer, in full:

    moves(new_state, *actions)   accepted: exactly this state and exactly these actions, in order
    STAYS                        accepted, nothing to do: the very same state object and no action
    rejects(hint)                `RejectedEvent`, with exactly this hint after the phase

`Playbook(plan).play(state, event, expected)` checks one case; `play_through` checks a
script of them, each starting from the state the previous one left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from config.migration import StepPlan
from migration.gates import Result, Verdict
from migration.rollout import Action, Event, MigrationState, RecordAudit, RejectedEvent, Tick, transition


@dataclass(frozen=True, slots=True)
class Moves:
    state: MigrationState
    actions: tuple[Action, ...]


@dataclass(frozen=True, slots=True)
class Stays:
    pass


@dataclass(frozen=True, slots=True)
class Rejects:
    hint: str


Expected = Moves | Stays | Rejects

STAYS = Stays()


def moves(state: MigrationState, *actions: Action) -> Moves:
    return Moves(state, actions)


def rejects(hint: str) -> Rejects:
    return Rejects(hint)


def where(state: MigrationState) -> str:
    """How a rejection names the phase: a canary step is named with its index."""
    return f"canary step {state.step_index}" if state.phase == "canary" else state.phase


@dataclass(frozen=True, slots=True)
class Playbook:
    plan: StepPlan

    def verdict(self, result: Result, started_at: float, now: float, critical: bool = False) -> Verdict:
        """A scripted verdict about the step started at `started_at`, judged at `now`."""
        return Verdict(
            result=result,
            critical=critical,
            reason=f"scripted {result}",
            gates=(),
            step_started_at=started_at,
            evaluated_at=now,
            requests_baseline=500,
            requests_candidate=500,
            min_samples=self.plan.min_samples,
            min_step_s=self.plan.min_step_s,
        )

    def tick(self, result: Result, started_at: float, now: float, critical: bool = False) -> Tick:
        return Tick(self.verdict(result, started_at, now, critical), now)

    def replay(self, *events: Event, state: MigrationState | None = None) -> MigrationState:
        """The state those events lead to, from `state` (a fresh migration by default)."""
        state = MigrationState() if state is None else state
        for event in events:
            state, _ = transition(state, event, self.plan)
        return state

    def play(self, state: MigrationState, event: Event, expected: Expected) -> MigrationState:
        """Apply `event` and check the whole answer; returns the state to continue from."""
        if isinstance(expected, Rejects):
            with pytest.raises(RejectedEvent) as rejected:
                transition(state, event, self.plan)
            assert str(rejected.value) == f"{type(event).__name__} rejected in phase {where(state)}: {expected.hint}"
            return state
        new, actions = transition(state, event, self.plan)
        if isinstance(expected, Stays):
            # Identity, not equality: the service skips the store commit only when it gets the same object back.
            assert new is state
            assert actions == ()
            return new
        # Tuple equality: an extra, missing or reordered action fails, not only a wrong one.
        assert actions == expected.actions
        assert new == expected.state
        # Guards the table itself against a hand-written case that breaks the machine's contract.
        assert new.version == state.version + 1
        assert [type(a) for a in actions].count(RecordAudit) == 1 and isinstance(actions[-1], RecordAudit)
        return new

    def play_through(self, state: MigrationState, script: Sequence[tuple[Event, Expected]]) -> MigrationState:
        for event, expected in script:
            state = self.play(state, event, expected)
        return state
