"""Fitting a conversation into a model's context window (pure; the counter is passed in).

`truncate_oldest` drops the oldest non-system messages first. An assistant
message that made tool calls goes together with the tool results answering it,
because a tool message without its call is an invalid request upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Message = dict[str, Any]

# Per-request framing tokens added on top of the messages (see metering.tokens).
_FRAMING = 3


@dataclass(frozen=True, slots=True)
class Fit:
    messages: list[Message]
    dropped: int
    prompt_tokens: int


def may_overflow(body_size: int, max_tokens: int, window: int) -> bool:
    """Cheap pre-check: every token covers at least one byte of the JSON body, so a
    body this small cannot overflow and the exact count can be skipped."""
    return body_size + _FRAMING + max_tokens > window


def _units(messages: Sequence[Message]) -> list[list[int]]:
    """Group droppable message indexes: an assistant tool-call message with its tool replies."""
    units: list[list[int]] = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            continue
        if role == "tool" and units and messages[units[-1][0]].get("tool_calls"):
            units[-1].append(index)
        else:
            units.append([index])
    return units


def fit_oldest_first(
    messages: Sequence[Message], budget: int, count_message: Callable[[Any], int]
) -> Fit | None:
    """Drop the oldest droppable units until the prompt fits `budget` tokens.

    Returns None when even the system messages plus the last unit do not fit.
    """
    counts = [count_message(m) for m in messages]
    total = _FRAMING + sum(counts)
    units = _units(messages)
    dropped: set[int] = set()
    # The newest unit is what the client is asking about; never drop it.
    for unit in units[:-1]:
        if total <= budget:
            break
        for index in unit:
            dropped.add(index)
            total -= counts[index]
    if total > budget:
        return None
    kept = [m for i, m in enumerate(messages) if i not in dropped]
    return Fit(messages=kept, dropped=len(dropped), prompt_tokens=total)
