"""Hard per-request caps for a plan-and-execute run, and the running account against them.

`Caps` come from config and can never be raised by planner output. One `Budget` lives for
one client request; every LLM call of that request (planner, executors, joiner) is checked
against it before it starts and charged to it when it ends:

    reason = budget.can_call(estimated_tokens)     None, or the stop reason that forbids the call
    budget.charge(prompt, completion, cost)        after the call, with what it really used

Callers that start calls concurrently (the scheduler) reserve instead, so that five calls
admitted at the same moment cannot together overshoot a cap the first one left room for:

    ticket = budget.reserve(tokens, cost)          counts the call and holds its worst case
    budget.charge(prompt, completion, cost, ticket)  settles it: the hold is released

A call refused only for what calls in flight hold (`held_back_by_calls_in_flight`) may wait
for their charges instead of ending the run: they usually spend less than they held.

Calls are counted when they start, tokens and dollars when they end. Money is `Decimal`
throughout (floats are refused). Time comes from an injected monotonic clock, so tests can
move the deadline without sleeping. A stop reason is one of the string constants below;
the meta-model reports it to the client when a run ends early.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Final, Literal

StopReason = Literal[
    "max_llm_calls", "max_total_tokens", "max_cost_usd", "deadline", "max_tasks", "max_replans", "repeated_work",
    "max_tool_calls",
]
MAX_LLM_CALLS: Final = "max_llm_calls"
MAX_TOTAL_TOKENS: Final = "max_total_tokens"
MAX_COST_USD: Final = "max_cost_usd"
DEADLINE: Final = "deadline"
MAX_TASKS: Final = "max_tasks"
MAX_REPLANS: Final = "max_replans"
REPEATED_WORK: Final = "repeated_work"
MAX_TOOL_CALLS: Final = "max_tool_calls"
STOP_REASONS: Final = (
    MAX_LLM_CALLS, MAX_TOTAL_TOKENS, MAX_COST_USD, DEADLINE, MAX_TASKS, MAX_REPLANS, REPEATED_WORK, MAX_TOOL_CALLS,
)

ZERO = Decimal(0)


class BudgetExhausted(Exception):
    """`reserve` was asked for a call the budget does not allow; `reason` says which cap."""

    def __init__(self, reason: StopReason) -> None:
        super().__init__(f"budget exhausted: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Caps:
    max_replans: int = 1
    max_tasks: int = 32
    max_llm_calls: int = 64
    max_total_tokens: int = 200_000
    max_cost_usd: Decimal = Decimal("1.00")
    deadline_s: float = 120.0
    max_tool_calls: int = 16

    def __post_init__(self) -> None:
        if min(self.max_replans, self.max_tasks, self.max_llm_calls, self.max_total_tokens, self.max_tool_calls) < 0:
            raise ValueError("caps must not be negative")
        if not isinstance(self.max_cost_usd, Decimal) or self.max_cost_usd < 0:
            raise ValueError("max_cost_usd must be a non-negative Decimal")
        if not self.deadline_s > 0:
            raise ValueError("deadline_s must be positive")


@dataclass(slots=True)
class Reservation:
    """One call admitted by `reserve` and not yet charged."""

    tokens: int
    cost: Decimal
    settled: bool = False


def _money(value: Decimal | int, what: str) -> Decimal:
    # Accumulated floats drift; a float here is a bug at the call site, not something to round away.
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"{what} must be a Decimal, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must not be negative")
    return Decimal(value)


class Budget:
    """The account of one request against its `Caps`. Not thread-safe; one event loop only."""

    __slots__ = (
        "_clock", "_in_flight", "_reserved_cost", "_reserved_tokens", "caps", "completion_tokens", "cost",
        "deadline_at", "llm_calls", "prompt_tokens", "replans", "started_at", "tasks_started", "tool_calls",
    )

    def __init__(
        self, caps: Caps | None = None, *, clock: Callable[[], float] = time.monotonic, started_at: float | None = None
    ) -> None:
        self.caps = caps or Caps()
        self._clock = clock
        self.started_at = clock() if started_at is None else started_at
        self.deadline_at = self.started_at + self.caps.deadline_s
        self.llm_calls = 0  # finished calls; calls in flight are in `_in_flight`
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost = ZERO
        self.tasks_started = 0
        self.replans = 0
        self.tool_calls = 0
        self._in_flight = 0
        self._reserved_tokens = 0
        self._reserved_cost = ZERO

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def seconds_left(self) -> float:
        return max(0.0, self.deadline_at - self._clock())

    def can_call(self, estimated_tokens: int = 0, estimated_cost: Decimal = ZERO) -> StopReason | None:
        """Why one more LLM call of about this size must not start, or None if it may.

        A cap already reached refuses any call, however small its estimate.
        """
        caps = self.caps
        if self._clock() >= self.deadline_at:
            return DEADLINE
        if self.llm_calls + self._in_flight >= caps.max_llm_calls:
            return MAX_LLM_CALLS
        tokens = self.total_tokens + self._reserved_tokens
        if tokens >= caps.max_total_tokens or tokens + estimated_tokens > caps.max_total_tokens:
            return MAX_TOTAL_TOKENS
        cost = self.cost + self._reserved_cost
        if cost >= caps.max_cost_usd or cost + estimated_cost > caps.max_cost_usd:
            return MAX_COST_USD
        return None

    def held_back_by_calls_in_flight(self, estimated_tokens: int = 0, estimated_cost: Decimal = ZERO) -> bool:
        """Whether `can_call` refuses this call only for what calls in flight hold: on what is already
        spent it would fit the token and dollar caps. Such a call may wait for them to be charged."""
        caps = self.caps
        if not self._in_flight or self._clock() >= self.deadline_at:
            return False
        if self.llm_calls + self._in_flight >= caps.max_llm_calls:
            return False  # a call in flight will count as a call when it ends: waiting frees nothing
        tokens, cost = self.total_tokens, self.cost
        if tokens >= caps.max_total_tokens or tokens + estimated_tokens > caps.max_total_tokens:
            return False
        return not (cost >= caps.max_cost_usd or cost + estimated_cost > caps.max_cost_usd)

    def reserve(self, estimated_tokens: int = 0, estimated_cost: Decimal = ZERO) -> Reservation:
        """Admit one call now, holding its estimate until `charge`; raises `BudgetExhausted` if not allowed."""
        estimated_cost = _money(estimated_cost, "estimated_cost")
        reason = self.can_call(estimated_tokens, estimated_cost)
        if reason is not None:
            raise BudgetExhausted(reason)
        self._in_flight += 1
        self._reserved_tokens += estimated_tokens
        self._reserved_cost += estimated_cost
        return Reservation(estimated_tokens, estimated_cost)

    def charge(
        self, prompt_tokens: int, completion_tokens: int, cost: Decimal, reservation: Reservation | None = None
    ) -> None:
        """Record one finished call (also one that failed or was cut off: it was still a call).

        Charges are never refused: what was spent was spent, even past a cap.
        """
        cost = _money(cost, "cost")
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ValueError("token counts must not be negative")
        if reservation is not None:
            if reservation.settled:
                raise ValueError("this reservation was already charged")
            reservation.settled = True
            self._in_flight -= 1
            self._reserved_tokens -= reservation.tokens
            self._reserved_cost -= reservation.cost
        self.llm_calls += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.cost += cost

    def can_start_task(self) -> StopReason | None:
        return MAX_TASKS if self.tasks_started >= self.caps.max_tasks else None

    def note_task_started(self) -> None:
        self.tasks_started += 1

    def can_call_tools(self, count: int = 1) -> StopReason | None:
        """Why `count` more tool calls must not be made, or None. A tool call is not an LLM call."""
        if self._clock() >= self.deadline_at:
            return DEADLINE
        return MAX_TOOL_CALLS if self.tool_calls + count > self.caps.max_tool_calls else None

    def tool_calls_left(self) -> int:
        return max(0, self.caps.max_tool_calls - self.tool_calls)

    def note_tool_calls(self, count: int = 1) -> None:
        self.tool_calls += count

    # What a run has spent in earlier rounds (planner.rounds keeps it between a run's round trips).
    _SPENT = ("llm_calls", "prompt_tokens", "completion_tokens", "tasks_started", "replans", "tool_calls")

    def spent(self) -> dict[str, int | str]:
        """The account so far, JSON-able (money as a decimal string); calls in flight are not in it."""
        return {**{name: getattr(self, name) for name in self._SPENT}, "cost": str(self.cost)}

    def add_spent(self, spent: dict[str, int | str]) -> None:
        """Carry an earlier round's account into this one: caps hold for the whole run."""
        for name in self._SPENT:
            setattr(self, name, getattr(self, name) + int(spent.get(name, 0)))
        self.cost += Decimal(str(spent.get("cost", "0")))

    def can_replan(self) -> StopReason | None:
        return MAX_REPLANS if self.replans >= self.caps.max_replans else None

    def note_replan(self) -> None:
        self.replans += 1

    def remaining(self) -> dict[str, int | float | str]:
        """What is left, for the planner's prompt; dollars as a decimal string, never a float."""
        caps = self.caps
        dollars = max(ZERO, caps.max_cost_usd - self.cost - self._reserved_cost)
        return {
            "tokens": max(0, caps.max_total_tokens - self.total_tokens - self._reserved_tokens),
            "dollars": str(dollars.quantize(Decimal("0.0001"), rounding=ROUND_DOWN)),
            "seconds": round(self.seconds_left(), 1),
            "llm_calls": max(0, caps.max_llm_calls - self.llm_calls - self._in_flight),
            "tasks": max(0, caps.max_tasks - self.tasks_started),
            "replans": max(0, caps.max_replans - self.replans),
            "tool_calls": self.tool_calls_left(),
        }

    def usage(self) -> dict[str, int]:
        """Summed usage in the OpenAI `usage` shape, for the one completion the client receives."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
