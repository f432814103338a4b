"""What one round of a run returns, and the trace records it is made of. Pure data."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from planner.internal import CallResult
from planner.plan import Plan, Task
from planner.scheduler import TaskResult


@dataclass
class RunOutcome:
    answer: str
    finish_reason: str
    stop_reason: str | None
    usage: dict[str, int]
    cost: Decimal
    trace: dict[str, Any]
    tasks_run: int
    llm_calls: int
    replans: int
    duration_s: float
    task_durations: list[tuple[str, float]] = field(default_factory=list)
    scheduler_overhead_s: list[float] = field(default_factory=list)
    task_queue_wait_s: list[float] = field(default_factory=list)
    cache_hit: bool | None = None
    # A round that ends with client tool calls: (task, its checked arguments), in plan order.
    tool_calls: list[tuple[Task, dict[str, Any]]] = field(default_factory=list)
    # For the next round: the plan so far, every finished task, and the run's whole account.
    plan: Plan | None = None
    results: dict[str, TaskResult] = field(default_factory=dict)
    spent: dict[str, int | str] = field(default_factory=dict)
    # The run's usage and cost over all its rounds (`usage` and `cost` are this round's).
    run_usage: dict[str, int] = field(default_factory=dict)
    run_cost: Decimal = Decimal(0)
    # This round's calls of MCP servers' tools by outcome (ok, failed).
    server_tool_calls: dict[str, int] = field(default_factory=dict)


def round_account(
    before: dict[str, int | str], usage: dict[str, int], cost: Decimal,
) -> tuple[dict[str, int], Decimal]:
    """This round's usage and cost: the run's totals less what earlier rounds spent (`before`)."""
    prompt = usage["prompt_tokens"] - int(before.get("prompt_tokens", 0))
    completion = usage["completion_tokens"] - int(before.get("completion_tokens", 0))
    spent = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return spent, cost - Decimal(str(before.get("cost", "0")))


def call_record(role: str, result: CallResult) -> dict[str, Any]:
    return {
        "role": role, "alias": result.alias, "provider": result.provider, "model": result.model, "status": "ok",
        "latency_ms": round(result.latency_s * 1000, 1), "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens, "cost_usd": str(result.cost),
    }


def task_record(result: TaskResult, tier: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    latency = (result.ended_at - result.started_at) if result.started_at and result.ended_at else None
    record = {
        "id": result.task_id, "tier": tier, "status": result.status, "model": result.model,
        "attempts": result.attempts, "latency_ms": None if latency is None else round(latency * 1000, 1),
        "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
        "cost_usd": str(result.cost), "error": result.error, "finish_reason": result.finish_reason,
    }
    if arguments is not None:
        record["arguments"] = arguments
    return record
