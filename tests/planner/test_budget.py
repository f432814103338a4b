"""Budget: every cap refuses the call that would cross it, reservations keep caps hard, money stays Decimal."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from planner.budget import (
    DEADLINE,
    MAX_COST_USD,
    MAX_LLM_CALLS,
    MAX_REPLANS,
    MAX_TASKS,
    MAX_TOTAL_TOKENS,
    STOP_REASONS,
    Budget,
    BudgetExhausted,
    Caps,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(clock: FakeClock | None = None, **caps: object) -> Budget:
    return Budget(Caps(**caps), clock=clock or FakeClock())  # type: ignore[arg-type]


def test_defaults() -> None:
    caps = Caps()
    assert (caps.max_replans, caps.max_tasks, caps.max_llm_calls, caps.max_total_tokens) == (1, 32, 64, 200_000)
    assert caps.max_cost_usd == Decimal("1.00") and caps.deadline_s == 120.0 and caps.max_tool_calls == 16
    assert set(STOP_REASONS) == {
        "max_llm_calls", "max_total_tokens", "max_cost_usd", "deadline", "max_tasks", "max_replans", "repeated_work",
        "max_tool_calls",
    }


def test_call_cap() -> None:
    budget = make(max_llm_calls=2)
    for _ in range(2):
        assert budget.can_call() is None
        budget.charge(10, 5, Decimal("0.01"))
    assert budget.can_call() == MAX_LLM_CALLS
    assert budget.llm_calls == 2 and budget.total_tokens == 30 and budget.cost == Decimal("0.02")


def test_token_cap_counts_the_estimate() -> None:
    budget = make(max_total_tokens=1000)
    budget.charge(600, 200, Decimal(0))
    assert budget.can_call(200) is None  # lands exactly on the cap
    assert budget.can_call(201) == MAX_TOTAL_TOKENS
    budget.charge(150, 50, Decimal(0))
    assert budget.can_call(0) == MAX_TOTAL_TOKENS  # nothing left, whatever the estimate


def test_cost_cap() -> None:
    budget = make(max_cost_usd=Decimal("0.10"))
    budget.charge(1, 1, Decimal("0.06"))
    assert budget.can_call() is None
    assert budget.can_call(estimated_cost=Decimal("0.05")) == MAX_COST_USD
    budget.charge(1, 1, Decimal("0.04"))
    assert budget.can_call() == MAX_COST_USD


def test_deadline_from_the_injected_clock() -> None:
    clock = FakeClock(50.0)
    budget = make(clock, deadline_s=10.0)
    assert budget.deadline_at == 60.0
    clock.now = 59.9
    assert budget.can_call() is None
    assert budget.remaining()["seconds"] == pytest.approx(0.1)
    clock.now = 60.0
    assert budget.can_call() == DEADLINE
    assert budget.remaining()["seconds"] == 0.0


def test_deadline_is_reported_before_other_caps() -> None:
    clock = FakeClock(0.0)
    budget = make(clock, max_llm_calls=0, deadline_s=1.0)
    assert budget.can_call() == MAX_LLM_CALLS
    clock.now = 5.0
    assert budget.can_call() == DEADLINE


def test_reservations_keep_caps_hard_under_concurrency() -> None:
    budget = make(max_llm_calls=2, max_total_tokens=1000)
    first = budget.reserve(400)
    second = budget.reserve(400)
    # Both still in flight: a third call is refused on calls, and a big one would be on tokens too.
    assert budget.can_call() == MAX_LLM_CALLS
    with pytest.raises(BudgetExhausted) as refused:
        budget.reserve(10)
    assert refused.value.reason == MAX_LLM_CALLS
    budget.charge(100, 50, Decimal("0.001"), first)
    budget.charge(100, 50, Decimal("0.001"), second)
    assert budget.llm_calls == 2 and budget.total_tokens == 300
    assert budget.remaining()["tokens"] == 700


def test_reserved_tokens_count_until_charged() -> None:
    budget = make(max_total_tokens=1000)
    ticket = budget.reserve(800)
    assert budget.can_call(300) == MAX_TOTAL_TOKENS
    assert budget.can_call(200) is None
    budget.charge(100, 100, Decimal(0), ticket)  # used far less than reserved
    assert budget.can_call(800) is None


def test_a_reservation_is_charged_once() -> None:
    budget = make()
    ticket = budget.reserve(10)
    budget.charge(1, 1, Decimal(0), ticket)
    with pytest.raises(ValueError, match="already"):
        budget.charge(1, 1, Decimal(0), ticket)


def test_charges_past_a_cap_are_still_recorded() -> None:
    budget = make(max_cost_usd=Decimal("0.01"))
    budget.charge(10, 10, Decimal("0.50"))
    assert budget.cost == Decimal("0.50")
    assert budget.remaining()["dollars"] == "0.0000"


def test_money_must_be_decimal() -> None:
    budget = make()
    with pytest.raises(TypeError):
        budget.charge(1, 1, 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        budget.charge(1, 1, Decimal("-0.1"))
    budget.charge(1, 1, 0)  # an int is exact
    with pytest.raises(ValueError):
        Caps(max_cost_usd=1.0)  # type: ignore[arg-type]


def test_many_small_charges_add_up_exactly() -> None:
    budget = make(max_cost_usd=Decimal("1.00"))
    for _ in range(10):
        budget.charge(1, 1, Decimal("0.1"))
    assert budget.cost == Decimal("1.0")
    assert budget.can_call() == MAX_COST_USD


def test_task_and_replan_caps() -> None:
    budget = make(max_tasks=2, max_replans=1)
    assert budget.can_start_task() is None
    budget.note_task_started()
    budget.note_task_started()
    assert budget.can_start_task() == MAX_TASKS
    assert budget.can_replan() is None
    budget.note_replan()
    assert budget.can_replan() == MAX_REPLANS


def test_remaining_is_ready_for_a_prompt() -> None:
    clock = FakeClock(0.0)
    budget = make(clock, max_total_tokens=10_000, max_cost_usd=Decimal("0.50"), deadline_s=60.0, max_llm_calls=10)
    budget.charge(1000, 500, Decimal("0.123456"))
    budget.reserve(500)
    clock.now = 12.34
    assert budget.remaining() == {
        "tokens": 8000, "dollars": "0.3765", "seconds": 47.7, "llm_calls": 8, "tasks": 32, "replans": 1,
        "tool_calls": 16,
    }
    assert budget.usage() == {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}


@pytest.mark.parametrize(
    "caps", [{"max_llm_calls": -1}, {"max_tasks": -1}, {"deadline_s": 0.0}, {"max_cost_usd": Decimal("-1")}]
)
def test_caps_reject_nonsense(caps: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Caps(**caps)  # type: ignore[arg-type]


def test_a_call_held_back_only_by_calls_in_flight_may_wait_for_them() -> None:
    budget = make(max_cost_usd=Decimal("1.00"), max_total_tokens=1000, max_llm_calls=3)
    assert not budget.held_back_by_calls_in_flight(10, Decimal("0.40"))  # nothing in flight to wait for
    first = budget.reserve(100, Decimal("0.40"))
    budget.reserve(100, Decimal("0.40"))
    assert budget.can_call(100, Decimal("0.40")) == MAX_COST_USD
    assert budget.held_back_by_calls_in_flight(100, Decimal("0.40"))  # $0 spent: fits once they settle
    assert not budget.held_back_by_calls_in_flight(100, Decimal("1.01"))  # would not fit even then
    assert not budget.held_back_by_calls_in_flight(1001, Decimal("0.01"))  # the token cap, the same
    budget.charge(10, 10, Decimal("0.70"), first)
    assert not budget.held_back_by_calls_in_flight(100, Decimal("0.40"))  # $0.70 spent: never fits
    assert budget.held_back_by_calls_in_flight(100, Decimal("0.30"))


def test_waiting_cannot_free_a_call_slot() -> None:
    budget = make(max_llm_calls=2)
    budget.reserve(1)
    budget.reserve(1)
    assert budget.can_call(1) == MAX_LLM_CALLS
    assert not budget.held_back_by_calls_in_flight(1)


def test_tool_calls_are_capped_apart_from_llm_calls() -> None:
    budget = make(max_tool_calls=3, max_llm_calls=2)
    assert budget.can_call_tools(3) is None and budget.can_call_tools(4) == "max_tool_calls"
    budget.note_tool_calls(2)
    assert budget.llm_calls == 0 and budget.tool_calls_left() == 1
    assert budget.can_call_tools(1) is None and budget.can_call_tools(2) == "max_tool_calls"
    budget.note_tool_calls(1)
    assert budget.can_call_tools(1) == "max_tool_calls"
    assert budget.can_call() is None  # LLM calls are still allowed


def test_an_earlier_rounds_account_carries_over() -> None:
    first = make(max_tool_calls=4, max_cost_usd=Decimal("1"))
    first.charge(100, 20, Decimal("0.25"))
    first.note_task_started()
    first.note_tool_calls(3)
    second = make(max_tool_calls=4, max_cost_usd=Decimal("1"))
    second.add_spent(orjson.loads(orjson.dumps(first.spent())))
    assert (second.llm_calls, second.total_tokens, second.cost, second.tasks_started, second.tool_calls) == (
        1, 120, Decimal("0.25"), 1, 3)
    assert second.can_call_tools(2) == "max_tool_calls"
