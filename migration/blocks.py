"""The recent block of a step: which samples the gates judge on their own, beside the whole step.

A step is cut into consecutive blocks of `recent_window_s`, each starting where the
last ended, on the controller's ticks. A block is known by its number in the step
and the step's pooled window at its start; its samples are the step's window now
minus that start (windows only grow, so the difference is exact). The controller
keeps the current block in the store beside the step's windows, so a new leader
carries on with the same block and number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from migration.window import StepWindow


@dataclass(frozen=True, slots=True)
class Block:
    index: int
    started_at: float
    # The step's pooled window when this block began.
    start: StepWindow

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "started_at": self.started_at, "start": self.start.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Block:
        return cls(int(data["index"]), float(data["started_at"]), StepWindow.from_dict(data["start"]))


def current_block(block: Block | None, window: StepWindow, now: float, length_s: float) -> Block:
    """The block a tick at `now` judges: the first starts with the step, the next once one has lasted `length_s`."""
    if block is None or block.start.started_at != window.started_at:
        return Block(1, window.started_at, StepWindow(window.started_at))
    if now - block.started_at >= length_s:
        return Block(block.index + 1, now, window)
    return block
