"""The words of the migration core, defined once.

    Arm     the two sides of a migration: the target that serves today (baseline)
            and the one it moves to (candidate); shadow copies go to one of them
    Phase   where a migration is in its life (see migration.rollout for the machine)
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Arm = Literal["baseline", "candidate"]
ARMS: Final[tuple[Arm, ...]] = get_args(Arm)

Phase = Literal["pending", "shadow", "canary", "promoted", "paused", "rolled_back", "aborted"]
PHASES: Final[tuple[Phase, ...]] = get_args(Phase)
# The phases that hold a step of traffic (and a window of samples for it).
StepPhase = Literal["shadow", "canary", "promoted"]
