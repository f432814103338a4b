"""Metrics of plan-and-execute runs, kept by the meta-model."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from telemetry import buckets


class PlannerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter(
            "cutover_pe_runs", "Plan-and-execute runs by finish reason (stop, length, error) and stop reason.",
            ["meta_model", "outcome", "stop_reason"], registry=registry,
        )
        self.tasks = Histogram(
            "cutover_pe_tasks_per_run", "Tasks executed per run.", ["meta_model"], buckets=buckets.COUNT,
            registry=registry,
        )
        self.llm_calls = Histogram(
            "cutover_pe_llm_calls_per_run", "Model calls per run (planner, executors, joiner).", ["meta_model"],
            buckets=buckets.COUNT, registry=registry,
        )
        self.replans = Counter("cutover_pe_replans", "Re-plans.", ["meta_model"], registry=registry)
        self.cost = Histogram(
            "cutover_pe_run_cost_usd", "What a run cost, every internal call summed.", ["meta_model"],
            buckets=buckets.RUN_COST, registry=registry,
        )
        self.equivalent_cost = Histogram(
            "cutover_pe_run_planner_equivalent_cost_usd",
            "The same run's tokens priced at the planner model: what running every step on it would cost.",
            ["meta_model"], buckets=buckets.RUN_COST, registry=registry,
        )
        self.duration = Histogram(
            "cutover_pe_run_duration_seconds", "Wall-clock time of a run.", ["meta_model"], buckets=buckets.LATENCY,
            registry=registry,
        )
        self.task_duration = Histogram(
            "cutover_pe_task_duration_seconds", "One task, by executor tier.", ["meta_model", "tier"],
            buckets=buckets.LATENCY, registry=registry,
        )
        self.cache = Counter(
            "cutover_pe_plan_cache", "Plan cache lookups by result (hit, miss).", ["meta_model", "result"],
            registry=registry,
        )
        self.overhead = Histogram(
            "cutover_pe_scheduler_overhead_seconds",
            "The scheduler's own time between a task becoming ready and its call, waits excluded.",
            ["meta_model"], buckets=buckets.OVERHEAD, registry=registry,
        )
        self.tool_calls = Counter(
            "cutover_pe_tool_calls",
            "Tool calls of runs: MCP servers' by outcome (ok, failed), the client's handed back (handed_back).",
            ["meta_model", "source", "outcome"], registry=registry,
        )
        self.queue_wait = Histogram(
            "cutover_pe_task_queue_wait_seconds",
            "Time a ready task waited for a concurrency slot or for room in the run's budget.",
            ["meta_model"], buckets=buckets.LATENCY, registry=registry,
        )
