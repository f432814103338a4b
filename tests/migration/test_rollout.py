"""The rollout state machine, driven by scripted events; then whole migrations against simulated traffic.

The state machine is tested as a playbook (see tests/migration/playbook.py): each case names
the state, the event and everything that must come of it, the whole new state and every
action in order, or the rejection. The table covers every phase against every event.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import replace
from itertools import product
from statistics import NormalDist
from typing import Any, get_args

import pytest
from pydantic import ValidationError

from config.migration import GateThresholds, MigrationSpec, StepPlan
from migration.gates import Result, Verdict, evaluate
from migration.rollout import (
    Abort,
    Event,
    MigrationState,
    Pause,
    Promote,
    PromoteFully,
    RecordAudit,
    RejectedEvent,
    Resumable,
    Resume,
    Retry,
    Rollback,
    SetWeight,
    SetWeights,
    Start,
    StartWindow,
    StopShadow,
    Tick,
    expects_tick,
    transition,
)
from migration.types import PHASES, Phase
from migration.window import ArmWindow, Histogram, Sample, StepWindow, Sums, bucket_index, merge
from tests.migration.playbook import STAYS, Expected, Playbook, Rejects, moves, rejects

PLAN = StepPlan(min_step_s=300, max_step_s=3000, min_samples=200, safety_window_s=600)
GATES = GateThresholds()
BOOK = Playbook(PLAN)


def verdict(result: Result, state: MigrationState, now: float, critical: bool = False) -> Verdict:
    """A verdict about the state's current step (any step when it has none)."""
    return BOOK.verdict(result, state.step_started_at or 0.0, now, critical)


def tick(state: MigrationState, result: Result, now: float, critical: bool = False) -> Tick:
    return Tick(verdict(result, state, now, critical), now)


def judged(result: Result, started_at: float, now: float, critical: bool = False) -> dict[str, Any]:
    """The verdict as an audit record carries it."""
    return BOOK.verdict(result, started_at, now, critical).to_dict()


def started() -> MigrationState:
    return BOOK.replay(Start(0.0))


def canary(step: int) -> MigrationState:
    """Canary step `step`, entered at `step + 1` s by Promote (version `step + 2`)."""
    return BOOK.replay(*(Promote(float(i + 1)) for i in range(step + 1)), state=started())


def promoted() -> MigrationState:
    return BOOK.replay(PromoteFully(10.0), state=started())


def settled() -> MigrationState:
    state = promoted()
    return BOOK.replay(tick(state, "pass", 10.0 + PLAN.safety_window_s), state=state)


# Every phase x every event ------------------------------------------------------------
#
# Each starting phase is reached by replaying events from a fresh migration; the literal
# next to it is what that replay must give (checked by a test), so the table's expected
# states can be read against it. MigrationState's positional fields are
# (phase, step_index, candidate_weight_bp, shadow_percent, step_started_at).

START_PHASES: dict[str, tuple[tuple[Event, ...], MigrationState]] = {
    "pending": ((), MigrationState()),
    "shadow": (
        (Start(100.0),),
        MigrationState("shadow", 0, 0, 10.0, 100.0, version=1, reason="started by operator"),
    ),
    "canary_first": (
        (Start(100.0), Promote(200.0)),
        MigrationState("canary", 0, 2500, 0.0, 200.0, version=2, reason="promoted to canary step 0 by operator"),
    ),
    # The 100 % step: the old baseline keeps an arm through the post-promotion copy.
    "canary_last": (
        (Start(100.0), Promote(200.0), Promote(300.0), Promote(400.0), Promote(500.0)),
        MigrationState("canary", 3, 10000, 5.0, 500.0, version=5, reason="promoted to canary step 3 by operator"),
    ),
    # Within the safety window: 600 s from 200.0.
    "promoted": (
        (Start(100.0), PromoteFully(200.0)),
        MigrationState("promoted", 0, 10000, 5.0, 200.0, version=2, reason="promoted fully by operator"),
    ),
    "settled": (
        (Start(100.0), PromoteFully(200.0), BOOK.tick("pass", 200.0, 800.0)),
        MigrationState("promoted", 0, 10000, 0.0, 200.0, version=3, reason="safety window of 600 s over"),
    ),
    "paused_shadow_by_operator": (
        (Start(100.0), Pause("alice", "looking")),
        MigrationState(
            "paused", 0, 0, 10.0, 100.0, paused_from=Resumable("shadow", 0), version=2,
            reason="paused by alice: looking", paused_by="alice",
        ),
    ),
    "paused_canary_by_operator": (
        (Start(100.0), Promote(200.0), Promote(300.0), Pause("alice", "looking")),
        MigrationState(
            "paused", 1, 5000, 0.0, 300.0, paused_from=Resumable("canary", 1), version=4,
            reason="paused by alice: looking", paused_by="alice",
        ),
    ),
    "paused_canary_by_gates": (
        (Start(100.0), Promote(200.0), BOOK.tick("inconclusive", 200.0, 3200.0)),
        MigrationState(
            "paused", 0, 2500, 0.0, 200.0, paused_from=Resumable("canary", 0), version=3,
            reason="inconclusive after 3000 s (max_step_s 3000): scripted inconclusive", paused_by="gates",
        ),
    ),
    "paused_canary_by_weight": (
        (Start(100.0), Promote(200.0), SetWeight(1234, 250.0, "carol")),
        MigrationState(
            "paused", 0, 1234, 0.0, 200.0, paused_from=Resumable("canary", 0), version=3,
            reason="weight set to 1234 bp by carol; automatic analysis paused", paused_by="carol",
        ),
    ),
    "paused_promoted_by_operator": (
        (Start(100.0), PromoteFully(200.0), Pause("alice", "looking")),
        MigrationState(
            "paused", 0, 10000, 5.0, 200.0, paused_from=Resumable("promoted", 0), version=3,
            reason="paused by alice: looking", paused_by="alice",
        ),
    ),
    "rolled_back": (
        (Start(100.0), Promote(200.0), Rollback("alice", "latency complaints")),
        MigrationState("rolled_back", version=3, reason="rolled back by alice: latency complaints"),
    ),
    "aborted": (
        (Start(100.0), Abort("alice", "wrong model")),
        MigrationState("aborted", version=2, reason="aborted by alice: wrong model"),
    ),
}


def start_state(name: str) -> MigrationState:
    return BOOK.replay(*START_PHASES[name][0])


def began(state: MigrationState) -> float:
    return state.step_started_at or 0.0


# Operator events all happen at NOW, later than any starting step. Each Tick verdict comes
# at the time that makes it decide something in shadow and canary: a pass once min_step_s
# is held, a fail or a critical fail at once, an inconclusive one at max_step_s.
NOW = 9000.0
EVENTS: dict[str, Callable[[MigrationState], Event]] = {
    "Start": lambda s: Start(NOW, "bob"),
    "Tick(pass)": lambda s: BOOK.tick("pass", began(s), began(s) + PLAN.min_step_s),
    "Tick(fail)": lambda s: BOOK.tick("fail", began(s), began(s) + 10),
    "Tick(inconclusive)": lambda s: BOOK.tick("inconclusive", began(s), began(s) + PLAN.max_step_s),
    "Tick(critical)": lambda s: BOOK.tick("fail", began(s), began(s) + 10, critical=True),
    "Pause": lambda s: Pause("bob", "why not"),
    "Resume": lambda s: Resume(NOW, "bob"),
    "Promote": lambda s: Promote(NOW, "bob"),
    "PromoteFully": lambda s: PromoteFully(NOW, "bob"),
    "Abort": lambda s: Abort("bob", "why not"),
    "Rollback": lambda s: Rollback("bob", "why not"),
    "SetWeight": lambda s: SetWeight(4321, NOW, "bob"),
    "Retry": lambda s: Retry(NOW, "bob"),
}

# The hints of the rejections, after "<Event> rejected in phase <phase>: ".
ALREADY_STARTED = "the migration has already started (a rolled-back one restarts by Retry)"
NOT_RETRYABLE = "only a rolled-back migration can be retried"
NO_ANALYSIS = "no analysis runs now"
WINDOW_OVER = "the safety window is over, nothing left to analyse"
NOT_RUNNING = "only a running migration can be paused"
NOT_PAUSED = "the migration is not paused"
NOT_PROMOTABLE = "only a migration in shadow, canary or paused can be promoted"
ALREADY_PROMOTED = "the candidate is already promoted; Resume continues the safety window"
FINISHED = "the migration is already finished"
NO_TRAFFIC = "the candidate serves no traffic to roll back"
NOT_SETTABLE = "weights can be set only while the migration runs or is paused"

# Reasons the table's events leave in the state and its audit record.
PAUSED = "paused by bob: why not"
ABORTED = "aborted by bob: why not"
ROLLED_BACK = "rolled back by bob: why not"
WEIGHT_SET = "weight set to 4321 bp by bob; automatic analysis paused"
FIRST_FAILURE = "check failed (1/3 in a row): scripted fail"
CRITICAL = "rolled back at once: scripted fail"
TIMED_OUT = "inconclusive after 3000 s (max_step_s 3000): scripted inconclusive"

BACK_TO_BASELINE = SetWeights(0, 0.0, "baseline")

TABLE: list[tuple[str, str, Expected]] = [
    # pending ---------------------------------------------------------------------------
    ("pending", "Start", moves(
        MigrationState("shadow", 0, 0, 10.0, NOW, version=1, reason="started by bob"),
        SetWeights(0, 10.0, "candidate"), StartWindow(NOW),
        RecordAudit("Start", "bob", "pending", "shadow", 0, 0, 10.0, "started by bob"),
    )),
    ("pending", "Tick(pass)", rejects(NO_ANALYSIS)),
    ("pending", "Tick(fail)", rejects(NO_ANALYSIS)),
    ("pending", "Tick(inconclusive)", rejects(NO_ANALYSIS)),
    ("pending", "Tick(critical)", rejects(NO_ANALYSIS)),
    ("pending", "Pause", rejects(NOT_RUNNING)),
    ("pending", "Resume", rejects(NOT_PAUSED)),
    ("pending", "Promote", rejects(NOT_PROMOTABLE)),
    ("pending", "PromoteFully", rejects(NOT_PROMOTABLE)),
    # Nothing routed yet, so no SetWeights: only the record.
    ("pending", "Abort", moves(
        MigrationState("aborted", version=1, reason=ABORTED),
        RecordAudit("Abort", "bob", "pending", "aborted", 0, 0, 0.0, ABORTED),
    )),
    ("pending", "Rollback", rejects(NO_TRAFFIC)),
    ("pending", "SetWeight", rejects(NOT_SETTABLE)),
    ("pending", "Retry", rejects(NOT_RETRYABLE)),
    # shadow (started at 100) -------------------------------------------------------------
    ("shadow", "Start", rejects(ALREADY_STARTED)),
    ("shadow", "Tick(pass)", moves(
        MigrationState("canary", 0, 2500, 0.0, 400.0, version=2, reason="gates passed after 300 s in shadow"),
        SetWeights(2500, 0.0, "baseline"), StopShadow(), StartWindow(400.0),
        RecordAudit(
            "Tick", "gates", "shadow", "canary", 0, 2500, 0.0, "gates passed after 300 s in shadow",
            judged("pass", 100.0, 400.0),
        ),
    )),
    ("shadow", "Tick(fail)", moves(
        MigrationState("shadow", 0, 0, 10.0, 100.0, consecutive_failures=1, version=2, reason=FIRST_FAILURE),
        RecordAudit("Tick", "gates", "shadow", "shadow", 0, 0, 10.0, FIRST_FAILURE, judged("fail", 100.0, 110.0)),
    )),
    # Traffic stays as it was: the copies still go to the candidate.
    ("shadow", "Tick(inconclusive)", moves(
        MigrationState(
            "paused", 0, 0, 10.0, 100.0, paused_from=Resumable("shadow", 0), version=2, reason=TIMED_OUT,
            paused_by="gates",
        ),
        RecordAudit(
            "Tick", "gates", "shadow", "paused", 0, 0, 10.0, TIMED_OUT, judged("inconclusive", 100.0, 3100.0),
        ),
    )),
    ("shadow", "Tick(critical)", moves(
        MigrationState("rolled_back", version=2, reason=CRITICAL),
        BACK_TO_BASELINE, StopShadow(),
        RecordAudit(
            "Tick", "gates", "shadow", "rolled_back", 0, 0, 0.0, CRITICAL, judged("fail", 100.0, 110.0, critical=True),
        ),
    )),
    ("shadow", "Pause", moves(
        MigrationState(
            "paused", 0, 0, 10.0, 100.0, paused_from=Resumable("shadow", 0), version=2, reason=PAUSED,
            paused_by="bob",
        ),
        RecordAudit("Pause", "bob", "shadow", "paused", 0, 0, 10.0, PAUSED),
    )),
    ("shadow", "Resume", rejects(NOT_PAUSED)),
    ("shadow", "Promote", moves(
        MigrationState("canary", 0, 2500, 0.0, NOW, version=2, reason="promoted to canary step 0 by bob"),
        SetWeights(2500, 0.0, "baseline"), StopShadow(), StartWindow(NOW),
        RecordAudit("Promote", "bob", "shadow", "canary", 0, 2500, 0.0, "promoted to canary step 0 by bob"),
    )),
    # The copy turns around (to the baseline) without a StopShadow: it does not drop to 0.
    ("shadow", "PromoteFully", moves(
        MigrationState("promoted", 0, 10000, 5.0, NOW, version=2, reason="promoted fully by bob"),
        SetWeights(10000, 5.0, "baseline"), StartWindow(NOW),
        RecordAudit("PromoteFully", "bob", "shadow", "promoted", 0, 10000, 5.0, "promoted fully by bob"),
    )),
    ("shadow", "Abort", moves(
        MigrationState("aborted", version=2, reason=ABORTED),
        BACK_TO_BASELINE, StopShadow(),
        RecordAudit("Abort", "bob", "shadow", "aborted", 0, 0, 0.0, ABORTED),
    )),
    ("shadow", "Rollback", moves(
        MigrationState("rolled_back", version=2, reason=ROLLED_BACK),
        BACK_TO_BASELINE, StopShadow(),
        RecordAudit("Rollback", "bob", "shadow", "rolled_back", 0, 0, 0.0, ROLLED_BACK),
    )),
    ("shadow", "SetWeight", moves(
        MigrationState(
            "paused", 0, 4321, 10.0, 100.0, paused_from=Resumable("shadow", 0), version=2, reason=WEIGHT_SET,
            paused_by="bob",
        ),
        SetWeights(4321, 10.0, "candidate"),
        RecordAudit("SetWeight", "bob", "shadow", "paused", 0, 4321, 10.0, WEIGHT_SET),
    )),
    ("shadow", "Retry", rejects(NOT_RETRYABLE)),
    # canary_first (step 0 at 25 %, started at 200) ---------------------------------------------
    ("canary_first", "Start", rejects(ALREADY_STARTED)),
    ("canary_first", "Tick(pass)", moves(
        MigrationState("canary", 1, 5000, 0.0, 500.0, version=3, reason="gates passed after 300 s in canary step 0"),
        SetWeights(5000, 0.0, "baseline"), StartWindow(500.0),
        RecordAudit(
            "Tick", "gates", "canary", "canary", 1, 5000, 0.0, "gates passed after 300 s in canary step 0",
            judged("pass", 200.0, 500.0),
        ),
    )),
    ("canary_first", "Tick(fail)", moves(
        MigrationState("canary", 0, 2500, 0.0, 200.0, consecutive_failures=1, version=3, reason=FIRST_FAILURE),
        RecordAudit("Tick", "gates", "canary", "canary", 0, 2500, 0.0, FIRST_FAILURE, judged("fail", 200.0, 210.0)),
    )),
    ("canary_first", "Tick(inconclusive)", moves(
        MigrationState(
            "paused", 0, 2500, 0.0, 200.0, paused_from=Resumable("canary", 0), version=3, reason=TIMED_OUT,
            paused_by="gates",
        ),
        RecordAudit(
            "Tick", "gates", "canary", "paused", 0, 2500, 0.0, TIMED_OUT, judged("inconclusive", 200.0, 3200.0),
        ),
    )),
    # No shadow runs at 25 %, so none to stop.
    ("canary_first", "Tick(critical)", moves(
        MigrationState("rolled_back", version=3, reason=CRITICAL),
        BACK_TO_BASELINE,
        RecordAudit(
            "Tick", "gates", "canary", "rolled_back", 0, 0, 0.0, CRITICAL, judged("fail", 200.0, 210.0, critical=True),
        ),
    )),
    ("canary_first", "Pause", moves(
        MigrationState(
            "paused", 0, 2500, 0.0, 200.0, paused_from=Resumable("canary", 0), version=3, reason=PAUSED,
            paused_by="bob",
        ),
        RecordAudit("Pause", "bob", "canary", "paused", 0, 2500, 0.0, PAUSED),
    )),
    ("canary_first", "Resume", rejects(NOT_PAUSED)),
    ("canary_first", "Promote", moves(
        MigrationState("canary", 1, 5000, 0.0, NOW, version=3, reason="promoted to canary step 1 by bob"),
        SetWeights(5000, 0.0, "baseline"), StartWindow(NOW),
        RecordAudit("Promote", "bob", "canary", "canary", 1, 5000, 0.0, "promoted to canary step 1 by bob"),
    )),
    ("canary_first", "PromoteFully", moves(
        MigrationState("promoted", 0, 10000, 5.0, NOW, version=3, reason="promoted fully by bob"),
        SetWeights(10000, 5.0, "baseline"), StartWindow(NOW),
        RecordAudit("PromoteFully", "bob", "canary", "promoted", 0, 10000, 5.0, "promoted fully by bob"),
    )),
    ("canary_first", "Abort", moves(
        MigrationState("aborted", version=3, reason=ABORTED),
        BACK_TO_BASELINE,
        RecordAudit("Abort", "bob", "canary", "aborted", 0, 0, 0.0, ABORTED),
    )),
    ("canary_first", "Rollback", moves(
        MigrationState("rolled_back", version=3, reason=ROLLED_BACK),
        BACK_TO_BASELINE,
        RecordAudit("Rollback", "bob", "canary", "rolled_back", 0, 0, 0.0, ROLLED_BACK),
    )),
    ("canary_first", "SetWeight", moves(
        MigrationState(
            "paused", 0, 4321, 0.0, 200.0, paused_from=Resumable("canary", 0), version=3, reason=WEIGHT_SET,
            paused_by="bob",
        ),
        SetWeights(4321, 0.0, "baseline"),
        RecordAudit("SetWeight", "bob", "canary", "paused", 0, 4321, 0.0, WEIGHT_SET),
    )),
    ("canary_first", "Retry", rejects(NOT_RETRYABLE)),
    # canary_last (step 3 at 100 % with the 5 % copy to the baseline, started at 500) -------------
    ("canary_last", "Start", rejects(ALREADY_STARTED)),
    # Routing is the same in promoted: a new window, but no SetWeights.
    ("canary_last", "Tick(pass)", moves(
        MigrationState("promoted", 0, 10000, 5.0, 800.0, version=6, reason="gates passed after 300 s in canary step 3"),
        StartWindow(800.0),
        RecordAudit(
            "Tick", "gates", "canary", "promoted", 0, 10000, 5.0, "gates passed after 300 s in canary step 3",
            judged("pass", 500.0, 800.0),
        ),
    )),
    ("canary_last", "Tick(fail)", moves(
        MigrationState("canary", 3, 10000, 5.0, 500.0, consecutive_failures=1, version=6, reason=FIRST_FAILURE),
        RecordAudit("Tick", "gates", "canary", "canary", 3, 10000, 5.0, FIRST_FAILURE, judged("fail", 500.0, 510.0)),
    )),
    ("canary_last", "Tick(inconclusive)", moves(
        MigrationState(
            "paused", 3, 10000, 5.0, 500.0, paused_from=Resumable("canary", 3), version=6, reason=TIMED_OUT,
            paused_by="gates",
        ),
        RecordAudit(
            "Tick", "gates", "canary", "paused", 3, 10000, 5.0, TIMED_OUT, judged("inconclusive", 500.0, 3500.0),
        ),
    )),
    ("canary_last", "Tick(critical)", moves(
        MigrationState("rolled_back", version=6, reason=CRITICAL),
        BACK_TO_BASELINE, StopShadow(),
        RecordAudit(
            "Tick", "gates", "canary", "rolled_back", 0, 0, 0.0, CRITICAL, judged("fail", 500.0, 510.0, critical=True),
        ),
    )),
    ("canary_last", "Pause", moves(
        MigrationState(
            "paused", 3, 10000, 5.0, 500.0, paused_from=Resumable("canary", 3), version=6, reason=PAUSED,
            paused_by="bob",
        ),
        RecordAudit("Pause", "bob", "canary", "paused", 3, 10000, 5.0, PAUSED),
    )),
    ("canary_last", "Resume", rejects(NOT_PAUSED)),
    ("canary_last", "Promote", moves(
        MigrationState("promoted", 0, 10000, 5.0, NOW, version=6, reason="promoted to promoted by bob"),
        StartWindow(NOW),
        RecordAudit("Promote", "bob", "canary", "promoted", 0, 10000, 5.0, "promoted to promoted by bob"),
    )),
    ("canary_last", "PromoteFully", moves(
        MigrationState("promoted", 0, 10000, 5.0, NOW, version=6, reason="promoted fully by bob"),
        StartWindow(NOW),
        RecordAudit("PromoteFully", "bob", "canary", "promoted", 0, 10000, 5.0, "promoted fully by bob"),
    )),
    ("canary_last", "Abort", moves(
        MigrationState("aborted", version=6, reason=ABORTED),
        BACK_TO_BASELINE, StopShadow(),
        RecordAudit("Abort", "bob", "canary", "aborted", 0, 0, 0.0, ABORTED),
    )),
    ("canary_last", "Rollback", moves(
        MigrationState("rolled_back", version=6, reason=ROLLED_BACK),
        BACK_TO_BASELINE, StopShadow(),
        RecordAudit("Rollback", "bob", "canary", "rolled_back", 0, 0, 0.0, ROLLED_BACK),
    )),
    ("canary_last", "SetWeight", moves(
        MigrationState(
            "paused", 3, 4321, 5.0, 500.0, paused_from=Resumable("canary", 3), version=6, reason=WEIGHT_SET,
            paused_by="bob",
        ),
        SetWeights(4321, 5.0, "baseline"),
        RecordAudit("SetWeight", "bob", "canary", "paused", 3, 4321, 5.0, WEIGHT_SET),
    )),
    ("canary_last", "Retry", rejects(NOT_RETRYABLE)),
    # promoted, within the safety window (started at 200, window 600 s) ---------------------
    ("promoted", "Start", rejects(ALREADY_STARTED)),
    # Held 300 s of 600: a pass has nothing to advance to yet.
    ("promoted", "Tick(pass)", STAYS),
    # The gates keep watching through the safety window: a failed check counts as in any step.
    ("promoted", "Tick(fail)", moves(
        MigrationState("promoted", 0, 10000, 5.0, 200.0, consecutive_failures=1, version=3, reason=FIRST_FAILURE),
        RecordAudit("Tick", "gates", "promoted", "promoted", 0, 10000, 5.0, FIRST_FAILURE,
                    judged("fail", 200.0, 210.0)),
    )),
    # Held 3000 s: the window is over, on any check that does not fail.
    ("promoted", "Tick(inconclusive)", moves(
        MigrationState("promoted", 0, 10000, 0.0, 200.0, version=3, reason="safety window of 600 s over"),
        SetWeights(10000, 0.0, "baseline"), StopShadow(),
        RecordAudit(
            "Tick", "gates", "promoted", "promoted", 0, 10000, 0.0, "safety window of 600 s over",
            judged("inconclusive", 200.0, 3200.0),
        ),
    )),
    ("promoted", "Tick(critical)", moves(
        MigrationState("rolled_back", version=3, reason=CRITICAL),
        BACK_TO_BASELINE, StopShadow(),
        RecordAudit(
            "Tick", "gates", "promoted", "rolled_back", 0, 0, 0.0, CRITICAL,
            judged("fail", 200.0, 210.0, critical=True),
        ),
    )),
    ("promoted", "Pause", moves(
        MigrationState(
            "paused", 0, 10000, 5.0, 200.0, paused_from=Resumable("promoted", 0), version=3, reason=PAUSED,
            paused_by="bob",
        ),
        RecordAudit("Pause", "bob", "promoted", "paused", 0, 10000, 5.0, PAUSED),
    )),
    ("promoted", "Resume", rejects(NOT_PAUSED)),
    ("promoted", "Promote", rejects(NOT_PROMOTABLE)),
    ("promoted", "PromoteFully", rejects(NOT_PROMOTABLE)),
    ("promoted", "Abort", moves(
        MigrationState("aborted", version=3, reason=ABORTED),
        BACK_TO_BASELINE, StopShadow(),
        RecordAudit("Abort", "bob", "promoted", "aborted", 0, 0, 0.0, ABORTED),
    )),
    ("promoted", "Rollback", moves(
        MigrationState("rolled_back", version=3, reason=ROLLED_BACK),
        BACK_TO_BASELINE, StopShadow(),
        RecordAudit("Rollback", "bob", "promoted", "rolled_back", 0, 0, 0.0, ROLLED_BACK),
    )),
    ("promoted", "SetWeight", moves(
        MigrationState(
            "paused", 0, 4321, 5.0, 200.0, paused_from=Resumable("promoted", 0), version=3, reason=WEIGHT_SET,
            paused_by="bob",
        ),
        SetWeights(4321, 5.0, "baseline"),
        RecordAudit("SetWeight", "bob", "promoted", "paused", 0, 4321, 5.0, WEIGHT_SET),
    )),
    ("promoted", "Retry", rejects(NOT_RETRYABLE)),
    # settled (promoted, safety window over) ------------------------------------------------
    ("settled", "Start", rejects(ALREADY_STARTED)),
    ("settled", "Tick(pass)", rejects(WINDOW_OVER)),
    ("settled", "Tick(fail)", rejects(WINDOW_OVER)),
    ("settled", "Tick(inconclusive)", rejects(WINDOW_OVER)),
    ("settled", "Tick(critical)", rejects(WINDOW_OVER)),
    ("settled", "Pause", rejects(NOT_RUNNING)),
    ("settled", "Resume", rejects(NOT_PAUSED)),
    ("settled", "Promote", rejects(NOT_PROMOTABLE)),
    ("settled", "PromoteFully", rejects(NOT_PROMOTABLE)),
    ("settled", "Abort", rejects(FINISHED)),
    # No copy left to stop.
    ("settled", "Rollback", moves(
        MigrationState("rolled_back", version=4, reason=ROLLED_BACK),
        BACK_TO_BASELINE,
        RecordAudit("Rollback", "bob", "promoted", "rolled_back", 0, 0, 0.0, ROLLED_BACK),
    )),
    ("settled", "SetWeight", rejects(NOT_SETTABLE)),
    ("settled", "Retry", rejects(NOT_RETRYABLE)),
    # paused_shadow_by_operator (alice paused the shadow started at 100) ---------------------------
    ("paused_shadow_by_operator", "Start", rejects(ALREADY_STARTED)),
    ("paused_shadow_by_operator", "Tick(pass)", rejects(NO_ANALYSIS)),
    ("paused_shadow_by_operator", "Tick(fail)", rejects(NO_ANALYSIS)),
    ("paused_shadow_by_operator", "Tick(inconclusive)", rejects(NO_ANALYSIS)),
    ("paused_shadow_by_operator", "Tick(critical)", rejects(NO_ANALYSIS)),
    ("paused_shadow_by_operator", "Pause", rejects(NOT_RUNNING)),
    # Same routing as when it was paused: only a new window.
    ("paused_shadow_by_operator", "Resume", moves(
        MigrationState("shadow", 0, 0, 10.0, NOW, version=3, reason="resumed shadow by bob"),
        StartWindow(NOW),
        RecordAudit("Resume", "bob", "paused", "shadow", 0, 0, 10.0, "resumed shadow by bob"),
    )),
    ("paused_shadow_by_operator", "Promote", moves(
        MigrationState("canary", 0, 2500, 0.0, NOW, version=3, reason="promoted to canary step 0 by bob"),
        SetWeights(2500, 0.0, "baseline"), StopShadow(), StartWindow(NOW),
        RecordAudit("Promote", "bob", "paused", "canary", 0, 2500, 0.0, "promoted to canary step 0 by bob"),
    )),
    ("paused_shadow_by_operator", "PromoteFully", moves(
        MigrationState("promoted", 0, 10000, 5.0, NOW, version=3, reason="promoted fully by bob"),
        SetWeights(10000, 5.0, "baseline"), StartWindow(NOW),
        RecordAudit("PromoteFully", "bob", "paused", "promoted", 0, 10000, 5.0, "promoted fully by bob"),
    )),
    ("paused_shadow_by_operator", "Abort", moves(
        MigrationState("aborted", version=3, reason=ABORTED),
        BACK_TO_BASELINE, StopShadow(),
        RecordAudit("Abort", "bob", "paused", "aborted", 0, 0, 0.0, ABORTED),
    )),
    ("paused_shadow_by_operator", "Rollback", moves(
        MigrationState("rolled_back", version=3, reason=ROLLED_BACK),
        BACK_TO_BASELINE, StopShadow(),
        RecordAudit("Rollback", "bob", "paused", "rolled_back", 0, 0, 0.0, ROLLED_BACK),
    )),
    # Still paused from the shadow step: the copies keep going to the candidate.
    ("paused_shadow_by_operator", "SetWeight", moves(
        MigrationState(
            "paused", 0, 4321, 10.0, 100.0, paused_from=Resumable("shadow", 0), version=3, reason=WEIGHT_SET,
            paused_by="bob",
        ),
        SetWeights(4321, 10.0, "candidate"),
        RecordAudit("SetWeight", "bob", "paused", "paused", 0, 4321, 10.0, WEIGHT_SET),
    )),
    ("paused_shadow_by_operator", "Retry", rejects(NOT_RETRYABLE)),
    # paused_canary_by_operator (alice paused canary step 1, 50 %, started at 300) -------------------
    ("paused_canary_by_operator", "Start", rejects(ALREADY_STARTED)),
    ("paused_canary_by_operator", "Tick(pass)", rejects(NO_ANALYSIS)),
    ("paused_canary_by_operator", "Tick(fail)", rejects(NO_ANALYSIS)),
    ("paused_canary_by_operator", "Tick(inconclusive)", rejects(NO_ANALYSIS)),
    ("paused_canary_by_operator", "Tick(critical)", rejects(NO_ANALYSIS)),
    ("paused_canary_by_operator", "Pause", rejects(NOT_RUNNING)),
    ("paused_canary_by_operator", "Resume", moves(
        MigrationState("canary", 1, 5000, 0.0, NOW, version=5, reason="resumed canary step 1 by bob"),
        StartWindow(NOW),
        RecordAudit("Resume", "bob", "paused", "canary", 1, 5000, 0.0, "resumed canary step 1 by bob"),
    )),
    ("paused_canary_by_operator", "Promote", moves(
        MigrationState("canary", 2, 7500, 0.0, NOW, version=5, reason="promoted to canary step 2 by bob"),
        SetWeights(7500, 0.0, "baseline"), StartWindow(NOW),
        RecordAudit("Promote", "bob", "paused", "canary", 2, 7500, 0.0, "promoted to canary step 2 by bob"),
    )),
    ("paused_canary_by_operator", "PromoteFully", moves(
        MigrationState("promoted", 0, 10000, 5.0, NOW, version=5, reason="promoted fully by bob"),
        SetWeights(10000, 5.0, "baseline"), StartWindow(NOW),
        RecordAudit("PromoteFully", "bob", "paused", "promoted", 0, 10000, 5.0, "promoted fully by bob"),
    )),
    ("paused_canary_by_operator", "Abort", moves(
        MigrationState("aborted", version=5, reason=ABORTED),
        BACK_TO_BASELINE,
        RecordAudit("Abort", "bob", "paused", "aborted", 0, 0, 0.0, ABORTED),
    )),
    ("paused_canary_by_operator", "Rollback", moves(
        MigrationState("rolled_back", version=5, reason=ROLLED_BACK),
        BACK_TO_BASELINE,
        RecordAudit("Rollback", "bob", "paused", "rolled_back", 0, 0, 0.0, ROLLED_BACK),
    )),
    ("paused_canary_by_operator", "SetWeight", moves(
        MigrationState(
            "paused", 1, 4321, 0.0, 300.0, paused_from=Resumable("canary", 1), version=5, reason=WEIGHT_SET,
            paused_by="bob",
        ),
        SetWeights(4321, 0.0, "baseline"),
        RecordAudit("SetWeight", "bob", "paused", "paused", 1, 4321, 0.0, WEIGHT_SET),
    )),
    ("paused_canary_by_operator", "Retry", rejects(NOT_RETRYABLE)),
    # paused_canary_by_gates (canary step 0 still inconclusive at max_step_s) ---------------------
    ("paused_canary_by_gates", "Start", rejects(ALREADY_STARTED)),
    ("paused_canary_by_gates", "Tick(pass)", rejects(NO_ANALYSIS)),
    ("paused_canary_by_gates", "Tick(fail)", rejects(NO_ANALYSIS)),
    ("paused_canary_by_gates", "Tick(inconclusive)", rejects(NO_ANALYSIS)),
    ("paused_canary_by_gates", "Tick(critical)", rejects(NO_ANALYSIS)),
    ("paused_canary_by_gates", "Pause", rejects(NOT_RUNNING)),
    ("paused_canary_by_gates", "Resume", moves(
        MigrationState("canary", 0, 2500, 0.0, NOW, version=4, reason="resumed canary step 0 by bob"),
        StartWindow(NOW),
        RecordAudit("Resume", "bob", "paused", "canary", 0, 2500, 0.0, "resumed canary step 0 by bob"),
    )),
    ("paused_canary_by_gates", "Promote", moves(
        MigrationState("canary", 1, 5000, 0.0, NOW, version=4, reason="promoted to canary step 1 by bob"),
        SetWeights(5000, 0.0, "baseline"), StartWindow(NOW),
        RecordAudit("Promote", "bob", "paused", "canary", 1, 5000, 0.0, "promoted to canary step 1 by bob"),
    )),
    ("paused_canary_by_gates", "PromoteFully", moves(
        MigrationState("promoted", 0, 10000, 5.0, NOW, version=4, reason="promoted fully by bob"),
        SetWeights(10000, 5.0, "baseline"), StartWindow(NOW),
        RecordAudit("PromoteFully", "bob", "paused", "promoted", 0, 10000, 5.0, "promoted fully by bob"),
    )),
    ("paused_canary_by_gates", "Abort", moves(
        MigrationState("aborted", version=4, reason=ABORTED),
        BACK_TO_BASELINE,
        RecordAudit("Abort", "bob", "paused", "aborted", 0, 0, 0.0, ABORTED),
    )),
    ("paused_canary_by_gates", "Rollback", moves(
        MigrationState("rolled_back", version=4, reason=ROLLED_BACK),
        BACK_TO_BASELINE,
        RecordAudit("Rollback", "bob", "paused", "rolled_back", 0, 0, 0.0, ROLLED_BACK),
    )),
    ("paused_canary_by_gates", "SetWeight", moves(
        MigrationState(
            "paused", 0, 4321, 0.0, 200.0, paused_from=Resumable("canary", 0), version=4, reason=WEIGHT_SET,
            paused_by="bob",
        ),
        SetWeights(4321, 0.0, "baseline"),
        RecordAudit("SetWeight", "bob", "paused", "paused", 0, 4321, 0.0, WEIGHT_SET),
    )),
    ("paused_canary_by_gates", "Retry", rejects(NOT_RETRYABLE)),
    # paused_canary_by_weight (carol set canary step 0 to 12.34 % by hand) ----------------------
    ("paused_canary_by_weight", "Start", rejects(ALREADY_STARTED)),
    ("paused_canary_by_weight", "Tick(pass)", rejects(NO_ANALYSIS)),
    ("paused_canary_by_weight", "Tick(fail)", rejects(NO_ANALYSIS)),
    ("paused_canary_by_weight", "Tick(inconclusive)", rejects(NO_ANALYSIS)),
    ("paused_canary_by_weight", "Tick(critical)", rejects(NO_ANALYSIS)),
    ("paused_canary_by_weight", "Pause", rejects(NOT_RUNNING)),
    # Back to the plan's weight for the step it left.
    ("paused_canary_by_weight", "Resume", moves(
        MigrationState("canary", 0, 2500, 0.0, NOW, version=4, reason="resumed canary step 0 by bob"),
        SetWeights(2500, 0.0, "baseline"), StartWindow(NOW),
        RecordAudit("Resume", "bob", "paused", "canary", 0, 2500, 0.0, "resumed canary step 0 by bob"),
    )),
    ("paused_canary_by_weight", "Promote", moves(
        MigrationState("canary", 1, 5000, 0.0, NOW, version=4, reason="promoted to canary step 1 by bob"),
        SetWeights(5000, 0.0, "baseline"), StartWindow(NOW),
        RecordAudit("Promote", "bob", "paused", "canary", 1, 5000, 0.0, "promoted to canary step 1 by bob"),
    )),
    ("paused_canary_by_weight", "PromoteFully", moves(
        MigrationState("promoted", 0, 10000, 5.0, NOW, version=4, reason="promoted fully by bob"),
        SetWeights(10000, 5.0, "baseline"), StartWindow(NOW),
        RecordAudit("PromoteFully", "bob", "paused", "promoted", 0, 10000, 5.0, "promoted fully by bob"),
    )),
    ("paused_canary_by_weight", "Abort", moves(
        MigrationState("aborted", version=4, reason=ABORTED),
        BACK_TO_BASELINE,
        RecordAudit("Abort", "bob", "paused", "aborted", 0, 0, 0.0, ABORTED),
    )),
    ("paused_canary_by_weight", "Rollback", moves(
        MigrationState("rolled_back", version=4, reason=ROLLED_BACK),
        BACK_TO_BASELINE,
        RecordAudit("Rollback", "bob", "paused", "rolled_back", 0, 0, 0.0, ROLLED_BACK),
    )),
    ("paused_canary_by_weight", "SetWeight", moves(
        MigrationState(
            "paused", 0, 4321, 0.0, 200.0, paused_from=Resumable("canary", 0), version=4, reason=WEIGHT_SET,
            paused_by="bob",
        ),
        SetWeights(4321, 0.0, "baseline"),
        RecordAudit("SetWeight", "bob", "paused", "paused", 0, 4321, 0.0, WEIGHT_SET),
    )),
    ("paused_canary_by_weight", "Retry", rejects(NOT_RETRYABLE)),
    # paused_promoted_by_operator (alice paused the safety window started at 200) -------------------
    ("paused_promoted_by_operator", "Start", rejects(ALREADY_STARTED)),
    ("paused_promoted_by_operator", "Tick(pass)", rejects(NO_ANALYSIS)),
    ("paused_promoted_by_operator", "Tick(fail)", rejects(NO_ANALYSIS)),
    ("paused_promoted_by_operator", "Tick(inconclusive)", rejects(NO_ANALYSIS)),
    ("paused_promoted_by_operator", "Tick(critical)", rejects(NO_ANALYSIS)),
    ("paused_promoted_by_operator", "Pause", rejects(NOT_RUNNING)),
    # The safety window starts over from the resume, it does not carry on.
    ("paused_promoted_by_operator", "Resume", moves(
        MigrationState("promoted", 0, 10000, 5.0, NOW, version=4, reason="resumed promoted by bob"),
        StartWindow(NOW),
        RecordAudit("Resume", "bob", "paused", "promoted", 0, 10000, 5.0, "resumed promoted by bob"),
    )),
    ("paused_promoted_by_operator", "Promote", rejects(ALREADY_PROMOTED)),
    ("paused_promoted_by_operator", "PromoteFully", rejects(ALREADY_PROMOTED)),
    ("paused_promoted_by_operator", "Abort", moves(
        MigrationState("aborted", version=4, reason=ABORTED),
        BACK_TO_BASELINE, StopShadow(),
        RecordAudit("Abort", "bob", "paused", "aborted", 0, 0, 0.0, ABORTED),
    )),
    ("paused_promoted_by_operator", "Rollback", moves(
        MigrationState("rolled_back", version=4, reason=ROLLED_BACK),
        BACK_TO_BASELINE, StopShadow(),
        RecordAudit("Rollback", "bob", "paused", "rolled_back", 0, 0, 0.0, ROLLED_BACK),
    )),
    ("paused_promoted_by_operator", "SetWeight", moves(
        MigrationState(
            "paused", 0, 4321, 5.0, 200.0, paused_from=Resumable("promoted", 0), version=4, reason=WEIGHT_SET,
            paused_by="bob",
        ),
        SetWeights(4321, 5.0, "baseline"),
        RecordAudit("SetWeight", "bob", "paused", "paused", 0, 4321, 5.0, WEIGHT_SET),
    )),
    ("paused_promoted_by_operator", "Retry", rejects(NOT_RETRYABLE)),
    # rolled_back -----------------------------------------------------------------------------
    ("rolled_back", "Start", rejects(ALREADY_STARTED)),
    ("rolled_back", "Tick(pass)", rejects(NO_ANALYSIS)),
    ("rolled_back", "Tick(fail)", rejects(NO_ANALYSIS)),
    ("rolled_back", "Tick(inconclusive)", rejects(NO_ANALYSIS)),
    ("rolled_back", "Tick(critical)", rejects(NO_ANALYSIS)),
    ("rolled_back", "Pause", rejects(NOT_RUNNING)),
    ("rolled_back", "Resume", rejects(NOT_PAUSED)),
    ("rolled_back", "Promote", rejects(NOT_PROMOTABLE)),
    ("rolled_back", "PromoteFully", rejects(NOT_PROMOTABLE)),
    # The baseline already serves all: only the record.
    ("rolled_back", "Abort", moves(
        MigrationState("aborted", version=4, reason=ABORTED),
        RecordAudit("Abort", "bob", "rolled_back", "aborted", 0, 0, 0.0, ABORTED),
    )),
    ("rolled_back", "Rollback", rejects(NO_TRAFFIC)),
    ("rolled_back", "SetWeight", rejects(NOT_SETTABLE)),
    ("rolled_back", "Retry", moves(
        MigrationState("shadow", 0, 0, 10.0, NOW, version=4, reason="retried by bob"),
        SetWeights(0, 10.0, "candidate"), StartWindow(NOW),
        RecordAudit("Retry", "bob", "rolled_back", "shadow", 0, 0, 10.0, "retried by bob"),
    )),
    # aborted: terminal ---------------------------------------------------------------------
    ("aborted", "Start", rejects(ALREADY_STARTED)),
    ("aborted", "Tick(pass)", rejects(NO_ANALYSIS)),
    ("aborted", "Tick(fail)", rejects(NO_ANALYSIS)),
    ("aborted", "Tick(inconclusive)", rejects(NO_ANALYSIS)),
    ("aborted", "Tick(critical)", rejects(NO_ANALYSIS)),
    ("aborted", "Pause", rejects(NOT_RUNNING)),
    ("aborted", "Resume", rejects(NOT_PAUSED)),
    ("aborted", "Promote", rejects(NOT_PROMOTABLE)),
    ("aborted", "PromoteFully", rejects(NOT_PROMOTABLE)),
    ("aborted", "Abort", rejects(FINISHED)),
    ("aborted", "Rollback", rejects(NO_TRAFFIC)),
    ("aborted", "SetWeight", rejects(NOT_SETTABLE)),
    ("aborted", "Retry", rejects(NOT_RETRYABLE)),
]

# What each phase accepts, by event type: the table's verdict at a glance, checked against it.
RUNNING = {"Tick", "Pause", "Promote", "PromoteFully", "Abort", "Rollback", "SetWeight"}
PAUSED_IN_A_STEP = {"Resume", "Promote", "PromoteFully", "Abort", "Rollback", "SetWeight"}
ACCEPTS: dict[str, set[str]] = {
    "pending": {"Start", "Abort"},
    "shadow": RUNNING,
    "canary_first": RUNNING,
    "canary_last": RUNNING,
    "promoted": {"Tick", "Pause", "Abort", "Rollback", "SetWeight"},
    "settled": {"Rollback"},
    "paused_shadow_by_operator": PAUSED_IN_A_STEP,
    "paused_canary_by_operator": PAUSED_IN_A_STEP,
    "paused_canary_by_gates": PAUSED_IN_A_STEP,
    "paused_canary_by_weight": PAUSED_IN_A_STEP,
    "paused_promoted_by_operator": {"Resume", "Abort", "Rollback", "SetWeight"},
    "rolled_back": {"Retry", "Abort"},
    "aborted": set(),
}
ANALYSED = {"shadow", "canary_first", "canary_last", "promoted"}


def test_the_table_has_every_phase_x_event_cell_once() -> None:
    cells = [(phase, event) for phase, event, _ in TABLE]
    duplicates = sorted({cell for cell in cells if cells.count(cell) > 1})
    assert duplicates == []
    missing = sorted(set(product(START_PHASES, EVENTS)) - set(cells))
    unknown = sorted(set(cells) - set(product(START_PHASES, EVENTS)))
    assert (missing, unknown) == ([], [])


def test_the_table_names_every_phase_event_type_and_verdict() -> None:
    assert {state.phase for _, state in START_PHASES.values()} == set(PHASES)
    events = [make(MigrationState("canary", 0, 2500, 0.0, 1.0)) for make in EVENTS.values()]
    assert {type(event) for event in events} == set(get_args(Event))
    ticks = [event for event in events if isinstance(event, Tick)]
    assert {(t.verdict.result, t.verdict.critical) for t in ticks} == {
        *((result, False) for result in get_args(Result)),
        ("fail", True),
    }


@pytest.mark.parametrize("name", list(START_PHASES))
def test_each_starting_phase_is_what_the_table_assumes(name: str) -> None:
    state = start_state(name)
    assert state == START_PHASES[name][1]
    assert expects_tick(state) == state.auto_analysis == (name in ANALYSED)


@pytest.mark.parametrize(
    ("phase", "event", "expected"), [pytest.param(*row, id=f"{row[0]}-{row[1]}") for row in TABLE]
)
def test_every_phase_x_event(phase: str, event: str, expected: Expected) -> None:
    state = start_state(phase)
    BOOK.play(state, EVENTS[event](state), expected)


def test_every_phase_accepts_exactly_its_events() -> None:
    accepted: dict[str, set[str]] = {phase: set() for phase in START_PHASES}
    for phase, event, expected in TABLE:
        if not isinstance(expected, Rejects):
            accepted[phase].add(event.split("(")[0])
    assert accepted == ACCEPTS


# Scripted transitions --------------------------------------------------------------


def test_start_enters_shadow() -> None:
    start = Start(100.0, "alice")
    state = BOOK.play(MigrationState(), start, moves(
        MigrationState("shadow", 0, 0, 10.0, 100.0, version=1, reason="started by alice"),
        SetWeights(0, 10.0, "candidate"), StartWindow(100.0),
        RecordAudit("Start", "alice", "pending", "shadow", 0, 0, 10.0, "started by alice"),
    ))
    assert state.shadow_to == "candidate" and state.auto_analysis
    _, actions = transition(MigrationState(), start, PLAN)
    audit = actions[-1]
    assert isinstance(audit, RecordAudit) and audit.to_dict()["actor"] == "alice"


def test_start_without_shadow_goes_straight_to_canary() -> None:
    plan = StepPlan(shadow_percent=0, min_step_s=300, max_step_s=3000)
    Playbook(plan).play(MigrationState(), Start(0.0), moves(
        MigrationState("canary", 0, 2500, 0.0, 0.0, version=1, reason="started by operator"),
        SetWeights(2500, 0.0, "baseline"), StartWindow(0.0),
        RecordAudit("Start", "operator", "pending", "canary", 0, 2500, 0.0, "started by operator"),
    ))


def passed(to: MigrationState, since: float, from_phase: Phase, *routing: SetWeights | StopShadow) -> Expected:
    """A passing tick that enters `to`, judging the step started at `since`; its record mirrors `to`."""
    at = began(to)
    return moves(
        to, *routing, StartWindow(at),
        RecordAudit(
            "Tick", "gates", from_phase, to.phase, to.step_index, to.candidate_weight_bp, to.shadow_percent,
            to.reason, judged("pass", since, at),
        ),
    )


def test_full_promotion_walks_every_phase_in_order() -> None:
    def routing(s: MigrationState) -> tuple[object, ...]:
        return s.phase, s.step_index, s.candidate_weight_bp, s.shadow_percent, s.shadow_to

    def reason(label: str) -> str:
        return f"gates passed after 300 s in {label}"

    # Ticks every interval_s with a passing verdict; any time not listed must change nothing.
    walk: dict[float, Expected] = {
        300.0: passed(
            MigrationState("canary", 0, 2500, 0.0, 300.0, version=2, reason=reason("shadow")), 0.0, "shadow",
            SetWeights(2500, 0.0, "baseline"), StopShadow(),
        ),
        600.0: passed(
            MigrationState("canary", 1, 5000, 0.0, 600.0, version=3, reason=reason("canary step 0")),
            300.0, "canary", SetWeights(5000, 0.0, "baseline"),
        ),
        900.0: passed(
            MigrationState("canary", 2, 7500, 0.0, 900.0, version=4, reason=reason("canary step 1")),
            600.0, "canary", SetWeights(7500, 0.0, "baseline"),
        ),
        1200.0: passed(
            MigrationState("canary", 3, 10000, 5.0, 1200.0, version=5, reason=reason("canary step 2")),
            900.0, "canary", SetWeights(10000, 5.0, "baseline"),
        ),
        1500.0: passed(
            MigrationState("promoted", 0, 10000, 5.0, 1500.0, version=6, reason=reason("canary step 3")),
            1200.0, "canary",
        ),
        2100.0: moves(
            MigrationState("promoted", 0, 10000, 0.0, 1500.0, version=7, reason="safety window of 600 s over"),
            SetWeights(10000, 0.0, "baseline"), StopShadow(),
            RecordAudit(
                "Tick", "gates", "promoted", "promoted", 0, 10000, 0.0, "safety window of 600 s over",
                judged("pass", 1500.0, 2100.0),
            ),
        ),
    }
    state, now = started(), 0.0
    seen = [routing(state)]
    while expects_tick(state):
        now += PLAN.interval_s
        before = state
        state = BOOK.play(state, tick(state, "pass", now), walk.get(now, STAYS))
        if state is not before:
            seen.append(routing(state))
    assert seen == [
        ("shadow", 0, 0, 10.0, "candidate"),
        ("canary", 0, 2500, 0.0, "baseline"),
        ("canary", 1, 5000, 0.0, "baseline"),
        ("canary", 2, 7500, 0.0, "baseline"),
        # At 100 % the old baseline keeps an arm through the post-promotion copy.
        ("canary", 3, 10000, 5.0, "baseline"),
        ("promoted", 0, 10000, 5.0, "baseline"),
        ("promoted", 0, 10000, 0.0, "baseline"),
    ]
    assert state.settled and state.version == 7
    assert now == pytest.approx(5 * PLAN.min_step_s + PLAN.safety_window_s)


def test_pass_before_the_minimum_hold_does_not_advance() -> None:
    state = started()
    BOOK.play(state, tick(state, "pass", PLAN.min_step_s - 1), STAYS)


def test_advance_starts_a_new_window_and_records_the_verdict() -> None:
    state = started()
    event = tick(state, "pass", 300.0)
    BOOK.play(state, event, moves(
        MigrationState("canary", 0, 2500, 0.0, 300.0, version=2, reason="gates passed after 300 s in shadow"),
        SetWeights(2500, 0.0, "baseline"), StopShadow(), StartWindow(300.0),
        RecordAudit(
            "Tick", "gates", "shadow", "canary", 0, 2500, 0.0, "gates passed after 300 s in shadow",
            judged("pass", 0.0, 300.0),
        ),
    ))
    _, actions = transition(state, event, PLAN)
    audit = actions[-1]
    assert isinstance(audit, RecordAudit)
    assert audit.verdict is not None and audit.verdict["result"] == "pass"
    # The record goes to the store as strict JSON, whole.
    assert json.loads(json.dumps(audit.to_dict(), allow_nan=False)) == audit.to_dict()
    assert audit.to_dict()["to_phase"] == "canary"


def test_consecutive_failures_roll_back() -> None:
    state = canary(1)
    t = began(state)
    assert (state.phase, state.step_index, t) == ("canary", 1, 2.0)
    state = BOOK.play_through(state, [
        (BOOK.tick("fail", t, t + 400), moves(
            MigrationState("canary", 1, 5000, 0.0, t, consecutive_failures=1, version=4, reason=FIRST_FAILURE),
            RecordAudit("Tick", "gates", "canary", "canary", 1, 5000, 0.0, FIRST_FAILURE, judged("fail", t, t + 400)),
        )),
        (BOOK.tick("fail", t, t + 420), moves(
            MigrationState(
                "canary", 1, 5000, 0.0, t, consecutive_failures=2, version=5,
                reason="check failed (2/3 in a row): scripted fail",
            ),
            RecordAudit(
                "Tick", "gates", "canary", "canary", 1, 5000, 0.0, "check failed (2/3 in a row): scripted fail",
                judged("fail", t, t + 420),
            ),
        )),
        (BOOK.tick("fail", t, t + 430), moves(
            MigrationState("rolled_back", version=6, reason="3 failed checks in a row: scripted fail"),
            BACK_TO_BASELINE,
            RecordAudit(
                "Tick", "gates", "canary", "rolled_back", 0, 0, 0.0, "3 failed checks in a row: scripted fail",
                judged("fail", t, t + 430),
            ),
        )),
    ])
    assert (state.phase, state.candidate_weight_bp, state.shadow_percent) == ("rolled_back", 0, 0.0)


def test_a_pass_resets_the_failure_count() -> None:
    state = canary(0)
    t = began(state)

    def failing(count: int, version: int) -> MigrationState:
        reason = f"check failed ({count}/3 in a row): scripted fail"
        return MigrationState("canary", 0, 2500, 0.0, t, consecutive_failures=count, version=version, reason=reason)

    def audit(s: MigrationState, result: Result, now: float) -> RecordAudit:
        return RecordAudit("Tick", "gates", "canary", "canary", 0, 2500, 0.0, s.reason, judged(result, t, now))

    reset = MigrationState("canary", 0, 2500, 0.0, t, version=5, reason="check passed: failure count reset")
    state = BOOK.play_through(state, [
        (BOOK.tick("fail", t, t + 10), moves(failing(1, 3), audit(failing(1, 3), "fail", t + 10))),
        (BOOK.tick("fail", t, t + 20), moves(failing(2, 4), audit(failing(2, 4), "fail", t + 20))),
        # Not held long enough to advance: the audit record is the only action.
        (BOOK.tick("pass", t, t + 30), moves(reset, audit(reset, "pass", t + 30))),
        (BOOK.tick("fail", t, t + 40), moves(failing(1, 6), audit(failing(1, 6), "fail", t + 40))),
    ])
    assert (state.phase, state.consecutive_failures) == ("canary", 1)


def test_critical_rolls_back_at_once_and_stops_the_shadow() -> None:
    state = started()
    BOOK.play(state, tick(state, "fail", 5.0, critical=True), moves(
        MigrationState("rolled_back", version=2, reason="rolled back at once: scripted fail"),
        BACK_TO_BASELINE, StopShadow(),
        RecordAudit(
            "Tick", "gates", "shadow", "rolled_back", 0, 0, 0.0, "rolled back at once: scripted fail",
            judged("fail", 0.0, 5.0, critical=True),
        ),
    ))


def test_promoted_rolls_back_on_failed_checks_in_a_row_and_at_once_on_critical() -> None:
    state = promoted()
    t = began(state)
    once = replace(state, consecutive_failures=1, version=state.version + 1, reason=FIRST_FAILURE)
    BOOK.play_through(state, [
        (tick(state, "fail", t + 10), moves(
            once,
            RecordAudit("Tick", "gates", "promoted", "promoted", 0, 10000, 5.0, FIRST_FAILURE,
                        judged("fail", t, t + 10)),
        )),
        (tick(state, "fail", t + 20, critical=True), moves(
            MigrationState("rolled_back", version=once.version + 1, reason=CRITICAL),
            BACK_TO_BASELINE, StopShadow(),
            RecordAudit(
                "Tick", "gates", "promoted", "rolled_back", 0, 0, 0.0, CRITICAL,
                judged("fail", t, t + 20, critical=True),
            ),
        )),
    ])
    state = BOOK.replay(*(tick(state, "fail", t + 10 * i) for i in range(1, PLAN.consecutive_failures)),
                        state=state)
    reason = f"{PLAN.consecutive_failures} failed checks in a row: scripted fail"
    BOOK.play(state, tick(state, "fail", t + 100), moves(
        MigrationState("rolled_back", version=state.version + 1, reason=reason),
        BACK_TO_BASELINE, StopShadow(),
        RecordAudit("Tick", "gates", "promoted", "rolled_back", 0, 0, 0.0, reason, judged("fail", t, t + 100)),
    ))


def test_the_safety_window_settles_only_on_a_check_that_does_not_fail() -> None:
    state = promoted()
    t = began(state)
    end = t + PLAN.safety_window_s
    failed = BOOK.replay(tick(state, "fail", end), state=state)
    assert (failed.phase, failed.settled, failed.consecutive_failures) == ("promoted", False, 1)
    reason = f"safety window of {PLAN.safety_window_s:.0f} s over"
    BOOK.play(failed, tick(failed, "inconclusive", end + 10), moves(
        replace(failed, shadow_percent=0.0, consecutive_failures=0, version=failed.version + 1, reason=reason),
        SetWeights(10000, 0.0, "baseline"), StopShadow(),
        RecordAudit("Tick", "gates", "promoted", "promoted", 0, 10000, 0.0, reason,
                    judged("inconclusive", t, end + 10)),
    ))


def test_an_inconclusive_check_starts_the_failure_count_again() -> None:
    state = canary(0)
    t = began(state)
    failed = BOOK.replay(tick(state, "fail", t + 10), state=state)
    assert failed.consecutive_failures == 1
    reset = replace(failed, consecutive_failures=0, version=failed.version + 1,
                    reason="check inconclusive: failure count reset")
    BOOK.play(failed, tick(failed, "inconclusive", t + 20), moves(
        reset,
        RecordAudit("Tick", "gates", "canary", "canary", 0, 2500, 0.0, reset.reason,
                    judged("inconclusive", t, t + 20)),
    ))


def test_inconclusive_past_max_step_pauses_then_resume_restarts_the_step() -> None:
    state = canary(2)
    t = began(state)
    assert (state.phase, state.step_index, state.version, t) == ("canary", 2, 4, 3.0)
    state = BOOK.play(state, BOOK.tick("inconclusive", t, t + PLAN.max_step_s - 1), STAYS)
    # Traffic stays as it was: no SetWeights.
    state = BOOK.play(state, BOOK.tick("inconclusive", t, t + PLAN.max_step_s), moves(
        MigrationState(
            "paused", 2, 7500, 0.0, t, paused_from=Resumable("canary", 2), version=5, reason=TIMED_OUT,
            paused_by="gates",
        ),
        RecordAudit(
            "Tick", "gates", "canary", "paused", 2, 7500, 0.0, TIMED_OUT,
            judged("inconclusive", t, t + PLAN.max_step_s),
        ),
    ))
    assert not state.auto_analysis
    assert state.reason == "inconclusive after 3000 s (max_step_s 3000): scripted inconclusive"
    state = BOOK.play(state, BOOK.tick("pass", t, t + 5000), rejects(NO_ANALYSIS))
    BOOK.play(state, Resume(t + 6000), moves(
        MigrationState("canary", 2, 7500, 0.0, t + 6000, version=6, reason="resumed canary step 2 by operator"),
        StartWindow(t + 6000),
        RecordAudit("Resume", "operator", "paused", "canary", 2, 7500, 0.0, "resumed canary step 2 by operator"),
    ))


def test_a_pause_records_who_paused_and_a_resume_clears_it() -> None:
    t0 = began(canary(2))
    t = t0 + PLAN.max_step_s
    by_gates = BOOK.play(canary(2), BOOK.tick("inconclusive", t0, t), moves(
        MigrationState(
            "paused", 2, 7500, 0.0, t0, paused_from=Resumable("canary", 2), version=5, reason=TIMED_OUT,
            paused_by="gates",
        ),
        RecordAudit("Tick", "gates", "canary", "paused", 2, 7500, 0.0, TIMED_OUT, judged("inconclusive", t0, t)),
    ))
    by_operator = BOOK.play(canary(2), Pause("dave", "weekend"), moves(
        MigrationState(
            "paused", 2, 7500, 0.0, t0, paused_from=Resumable("canary", 2), version=5,
            reason="paused by dave: weekend", paused_by="dave",
        ),
        RecordAudit("Pause", "dave", "canary", "paused", 2, 7500, 0.0, "paused by dave: weekend"),
    ))
    set_by_carol = "weight set to 3000 bp by carol; automatic analysis paused"
    by_weight = BOOK.play(by_gates, SetWeight(3000, t + 1, "carol"), moves(
        MigrationState(
            "paused", 2, 3000, 0.0, t0, paused_from=Resumable("canary", 2), version=6, reason=set_by_carol,
            paused_by="carol",
        ),
        SetWeights(3000, 0.0, "baseline"),
        RecordAudit("SetWeight", "carol", "paused", "paused", 2, 3000, 0.0, set_by_carol),
    ))
    assert (by_gates.paused_by, by_operator.paused_by, by_weight.paused_by) == ("gates", "dave", "carol")
    resumed = BOOK.play(by_gates, Resume(t + 2), moves(
        MigrationState("canary", 2, 7500, 0.0, t + 2, version=6, reason="resumed canary step 2 by operator"),
        StartWindow(t + 2),
        RecordAudit("Resume", "operator", "paused", "canary", 2, 7500, 0.0, "resumed canary step 2 by operator"),
    ))
    assert resumed.paused_by == ""
    # Kept with the state, so an alert on it survives a restart.
    assert MigrationState.from_dict(json.loads(json.dumps(by_gates.to_dict()))).paused_by == "gates"
    # A state stored before the field existed still loads.
    older = {k: v for k, v in by_operator.to_dict().items() if k != "paused_by"}
    assert MigrationState.from_dict(older).paused_by == ""
    # And one stored by a newer version, with a field this one does not know, loads too.
    newer = {**by_operator.to_dict(), "a_field_from_the_future": 1}
    assert MigrationState.from_dict(newer) == by_operator


def test_stale_verdict_is_rejected() -> None:
    old = verdict("fail", started(), 400.0)
    BOOK.play(canary(0), Tick(old, 400.0), rejects("verdict is about the step started at 0.0, not 1.0"))


def test_manual_weight_pauses_and_resume_restores_the_plan() -> None:
    by_carol = "weight set to 3000 bp by carol; automatic analysis paused"
    by_operator = "weight set to 100 bp by operator; automatic analysis paused"
    state = BOOK.play(canary(1), SetWeight(3000, 50.0, "carol"), moves(
        MigrationState(
            "paused", 1, 3000, 0.0, 2.0, paused_from=Resumable("canary", 1), version=4, reason=by_carol,
            paused_by="carol",
        ),
        SetWeights(3000, 0.0, "baseline"),
        RecordAudit("SetWeight", "carol", "canary", "paused", 1, 3000, 0.0, by_carol),
    ))
    assert (state.phase, state.candidate_weight_bp, state.auto_analysis) == ("paused", 3000, False)
    state = BOOK.play(state, SetWeight(100, 60.0), moves(
        MigrationState(
            "paused", 1, 100, 0.0, 2.0, paused_from=Resumable("canary", 1), version=5, reason=by_operator,
            paused_by="operator",
        ),
        SetWeights(100, 0.0, "baseline"),
        RecordAudit("SetWeight", "operator", "paused", "paused", 1, 100, 0.0, by_operator),
    ))
    BOOK.play(state, Resume(70.0), moves(
        MigrationState("canary", 1, 5000, 0.0, 70.0, version=6, reason="resumed canary step 1 by operator"),
        SetWeights(5000, 0.0, "baseline"), StartWindow(70.0),
        RecordAudit("Resume", "operator", "paused", "canary", 1, 5000, 0.0, "resumed canary step 1 by operator"),
    ))


def test_promote_from_paused_moves_past_the_paused_step() -> None:
    state = canary(3)
    assert (state.phase, state.step_index, state.version, began(state)) == ("canary", 3, 5, 4.0)
    state = BOOK.play_through(state, [
        (Pause("dave", "weekend"), moves(
            MigrationState(
                "paused", 3, 10000, 5.0, 4.0, paused_from=Resumable("canary", 3), version=6,
                reason="paused by dave: weekend", paused_by="dave",
            ),
            RecordAudit("Pause", "dave", "canary", "paused", 3, 10000, 5.0, "paused by dave: weekend"),
        )),
        # Past the last canary step is promoted; routing is the same, so only a new window.
        (Promote(99.0), moves(
            MigrationState("promoted", 0, 10000, 5.0, 99.0, version=7, reason="promoted to promoted by operator"),
            StartWindow(99.0),
            RecordAudit("Promote", "operator", "paused", "promoted", 0, 10000, 5.0, "promoted to promoted by operator"),
        )),
    ])
    assert state.step_started_at == 99.0


def test_promote_fully_from_shadow() -> None:
    state = BOOK.play(started(), PromoteFully(7.0), moves(
        MigrationState("promoted", 0, 10000, 5.0, 7.0, version=2, reason="promoted fully by operator"),
        SetWeights(10000, 5.0, "baseline"), StartWindow(7.0),
        RecordAudit("PromoteFully", "operator", "shadow", "promoted", 0, 10000, 5.0, "promoted fully by operator"),
    ))
    assert state.shadow_to == "baseline"


def test_abort_is_final() -> None:
    reason = "aborted by erin: vendor contract fell through"
    state = BOOK.play(canary(2), Abort("erin", "vendor contract fell through"), moves(
        MigrationState("aborted", version=5, reason=reason),
        BACK_TO_BASELINE,
        RecordAudit("Abort", "erin", "canary", "aborted", 0, 0, 0.0, reason),
    ))
    for make in EVENTS.values():
        with pytest.raises(RejectedEvent):
            transition(state, make(state), PLAN)


def test_rollback_from_promoted_then_retry_from_the_start() -> None:
    reason = "rolled back by frank: users complain"
    BOOK.play_through(promoted(), [
        (Rollback("frank", "users complain"), moves(
            MigrationState("rolled_back", version=3, reason=reason),
            BACK_TO_BASELINE, StopShadow(),
            RecordAudit("Rollback", "frank", "promoted", "rolled_back", 0, 0, 0.0, reason),
        )),
        (Promote(1.0), rejects(NOT_PROMOTABLE)),
        # From the first step again, with a clean failure count.
        (Retry(500.0, "frank"), moves(
            MigrationState("shadow", 0, 0, 10.0, 500.0, version=4, reason="retried by frank"),
            SetWeights(0, 10.0, "candidate"), StartWindow(500.0),
            RecordAudit("Retry", "frank", "rolled_back", "shadow", 0, 0, 10.0, "retried by frank"),
        )),
    ])


def test_settled_promotion_can_still_be_rolled_back() -> None:
    state = settled()
    assert state == MigrationState(
        "promoted", 0, 10000, 0.0, 10.0, version=3, reason="safety window of 600 s over"
    )
    assert not expects_tick(state)
    reason = "rolled back by gina: late regression"
    BOOK.play(state, Rollback("gina", "late regression"), moves(
        MigrationState("rolled_back", version=4, reason=reason),
        BACK_TO_BASELINE,
        RecordAudit("Rollback", "gina", "promoted", "rolled_back", 0, 0, 0.0, reason),
    ))


def test_set_weight_is_bounded() -> None:
    with pytest.raises(ValueError, match=r"0\.\.10000"):
        SetWeight(10001, 0.0)
    with pytest.raises(ValueError, match=r"0\.\.10000"):
        SetWeight(-1, 0.0)


@pytest.mark.parametrize("name", list(START_PHASES))
def test_state_round_trips_through_json(name: str) -> None:
    state = start_state(name)
    assert MigrationState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


# The plan ----------------------------------------------------------------------------


def spec(**overrides: object) -> MigrationSpec:
    data: dict[str, object] = {
        "id": "chat-to-sonnet",
        "alias": "chat",
        "baseline": {"provider": "openai", "model": "gpt-4o"},
        "candidate": {"provider": "anthropic", "model": "claude-sonnet"},
        "sticky": {"salt": "pepper"},
        **overrides,
    }
    return MigrationSpec.model_validate(data)


def test_defaults_follow_the_issue() -> None:
    plan, gates = spec().plan, spec().gates
    assert (plan.shadow_percent, plan.weights_bp, plan.min_samples) == (10, (2500, 5000, 7500, 10000), 200)
    assert (plan.consecutive_failures, plan.post_promotion_shadow_percent) == (3, 5)
    assert (gates.error_rate, gates.p99_ms, gates.ttft_p99_ms, gates.cost_increase) == (0.02, 800, 800, 0.05)
    assert (gates.critical_error_rate, gates.critical_min_requests) == (0.5, 20)
    assert spec().sticky.header == "x-cutover-sticky-key"
    # Unset, the salt is the migration's id: each migration buckets clients its own way.
    assert spec(sticky={}).sticky.salt == spec().id


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"plan": {"weights": [50, 25, 100]}}, "strictly increasing"),
        ({"plan": {"weights": [25, 50]}}, "last weight must be 100"),
        ({"plan": {"weights": [0, 100]}}, "percent in"),
        ({"plan": {"min_step_s": 600, "max_step_s": 600}}, "max_step_s must be greater"),
        ({"plan": {"post_promotion_shadow_percent": 0}}, "greater than 0"),
        ({"gates": {"error_rate": 1.5}}, "less than 1"),
        ({"candidate": {"provider": "openai", "model": "gpt-4o"}}, "differ from baseline"),
        ({"id": "has spaces"}, "pattern"),
        ({"plan": {"shadow": 10}}, "Extra inputs"),
        ({"sticky": {"salt": ""}}, "salt"),
    ],
)
def test_bad_plans_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(**overrides)


def test_specs_are_frozen() -> None:
    with pytest.raises(ValidationError):
        spec().plan.min_samples = 1  # type: ignore[misc]


# Gates into the state machine -------------------------------------------------------


def served(samples: list[Sample]) -> ArmWindow:
    """An arm's window where every request took one upstream attempt."""
    return ArmWindow.of(samples, attempts=[s.kind for s in samples])


SLOW = Sample("ok", 1500.0, None, 1000)
FAST = Sample("ok", 300.0, None, 1000)


@pytest.mark.parametrize(
    ("gate", "candidate"),
    [
        ("error_rate", [FAST] * 370 + [Sample("error")] * 30),
        ("latency_p99", [SLOW] * 40 + [FAST] * 360),
        ("ttft_p99", [Sample("ok", 300.0, 1900.0, 1000)] * 400),
        ("cost", [Sample("ok", 300.0, None, 1300)] * 400),
    ],
)
def test_each_gate_can_roll_back(gate: str, candidate: list[Sample]) -> None:
    state = canary(1)
    t = state.step_started_at or 0.0
    window = StepWindow(t, served([FAST] * 400), served(candidate))
    for i in range(PLAN.consecutive_failures):
        now = t + PLAN.min_step_s + 10 * i
        result = evaluate(window, GATES, PLAN, now)
        assert result.result == "fail" and not result.critical
        assert [g.gate for g in result.gates if g.result == "fail"] == [gate]
        state, _ = transition(state, Tick(result, now), PLAN)
    assert state.phase == "rolled_back"
    assert gate in state.reason


def test_critical_guard_through_the_gates() -> None:
    state = canary(0)
    t = state.step_started_at or 0.0
    window = StepWindow(t, served([FAST] * 5), served([Sample("error")] * 20))
    state, _ = transition(state, Tick(evaluate(window, GATES, PLAN, t + 20), t + 20), PLAN)
    assert state.phase == "rolled_back"
    assert state.reason.startswith("rolled back at once: critical (step): 20/20 attempts failed")


def test_too_few_samples_holds_then_pauses() -> None:
    state = started()
    window = StepWindow(0.0, served([FAST] * 1000), served([FAST] * 57))
    for now in (400.0, 1000.0, 2990.0):
        result = evaluate(window, GATES, PLAN, now)
        assert result.reason == "candidate has 57/200 samples"
        same, actions = transition(state, Tick(result, now), PLAN)
        assert same is state and actions == ()
    state, _ = transition(state, Tick(evaluate(window, GATES, PLAN, 3000.0), 3000.0), PLAN)
    assert state.phase == "paused"
    assert state.reason.endswith("candidate has 57/200 samples")


# Simulated traffic ----------------------------------------------------------------

SIM_PLAN = StepPlan(min_step_s=600, max_step_s=6 * 3600, interval_s=60, min_samples=200, safety_window_s=0)
RPS = 2.0
# Successful latencies: 16 evenly spaced quantiles of a lognormal with median 300 ms
# (true p99 ~ 600 ms), so the latency gate is exercised without deciding anything.
LATENCY_BUCKETS = [bucket_index(300 * math.exp(0.3 * NormalDist().inv_cdf((i + 0.5) / 16))) for i in range(16)]
COST_MICROS = 1000


def arm_window(ok: int, errors: int, pairs: int = 0) -> ArmWindow:
    """What one arm saw in an interval, counted straight into a window (fast enough for 400 runs)."""
    # Successes spread evenly over the latency quantiles: the latency gate sees a
    # realistic shape, and the error gate alone decides.
    buckets: dict[int, int] = {}
    for i, bucket in enumerate(LATENCY_BUCKETS):
        buckets[bucket] = buckets.get(bucket, 0) + ok // 16 + (i < ok % 16)
    return ArmWindow(
        requests=ok + errors,
        errors=errors,
        attempts=ok + errors,
        attempt_errors=errors,
        latency=Histogram(tuple(sorted((b, n) for b, n in buckets.items() if n))),
        cost=Sums(ok, ok * COST_MICROS, ok * COST_MICROS**2),
        pairs=Sums(pairs, 0, 0),  # shadowed prompts cost the same on both arms
    )


def simulate(seed: int, error_rate: float) -> MigrationState:
    """A whole migration at 2 req/s with Bernoulli candidate errors; gates every interval."""
    draw = random.Random(seed).random
    state, _ = transition(MigrationState(), Start(0.0), SIM_PLAN)
    window, now = StepWindow(0.0), 0.0
    while expects_tick(state) and state.phase != "promoted":
        weight, shadow = state.candidate_weight_bp / 10000, state.shadow_percent / 100
        copies_to_candidate = state.shadow_to == "candidate"
        ok_baseline = ok_candidate = errors = pairs = 0
        for _ in range(int(RPS * SIM_PLAN.interval_s)):
            on_candidate = draw() < weight
            # A shadow copy goes to the arm that did not serve the request.
            copied = on_candidate != copies_to_candidate and draw() < shadow
            if on_candidate or copied:
                if draw() < error_rate:
                    errors += 1
                else:
                    ok_candidate += 1
                    pairs += copied
            if copied or not on_candidate:
                ok_baseline += 1
        now += SIM_PLAN.interval_s
        window = StepWindow(
            window.started_at,
            merge(window.baseline, arm_window(ok_baseline, 0)),
            merge(window.candidate, arm_window(ok_candidate, errors, pairs)),
        )
        state, actions = transition(state, Tick(evaluate(window, GATES, SIM_PLAN, now), now), SIM_PLAN)
        for action in actions:
            if isinstance(action, StartWindow):
                window = StepWindow(action.started_at)
    return state


def test_true_one_percent_errors_are_never_rolled_back() -> None:
    ends = [simulate(seed, 0.01) for seed in range(200)]
    phases = [s.phase for s in ends]
    assert phases.count("rolled_back") == 0, [s.reason for s in ends if s.phase == "rolled_back"]
    assert phases.count("promoted") >= 195, [s.reason for s in ends if s.phase != "promoted"]


def test_true_five_percent_errors_are_rolled_back() -> None:
    ends = [simulate(seed, 0.05) for seed in range(1000, 1200)]
    rolled_back = [s for s in ends if s.phase == "rolled_back"]
    assert len(rolled_back) >= 196, [s.reason for s in ends if s.phase != "rolled_back"]
    assert all("error_rate" in s.reason for s in rolled_back)
