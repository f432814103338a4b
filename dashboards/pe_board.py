"""cutover / Plan-and-execute: runs, work per run and cost of the meta-models."""

from __future__ import annotations

from board import COUNT, PER_MIN, RATIO, RI, SECONDS, USD, Board, Q, quantiles, query_variable


def plan_and_execute() -> Board:
    p = 'meta_model=~"$meta_model"'
    board = Board(
        "cutover-plan-and-execute", "cutover / Plan-and-execute",
        "Meta-model runs: a planner writes a task graph, cheap executors run it, a joiner finishes or "
        "re-plans. Outcomes, work per run, cost against running everything on the planner model, latency, "
        "scheduler overhead and the plan cache.",
        ["cutover", "llm-gateway", "plan-and-execute"],
        [query_variable("meta_model", "Meta-model", "label_values(cutover_pe_runs_total, meta_model)", multi=True,
                         description="Meta-models of the config (meta_models).")],
    )
    board.row("Runs")
    board.panel(
        "Runs per minute by outcome and stop reason",
        "Finished runs by finish reason (stop; length = a cap stopped the run; error) and stop reason (none, "
        "deadline, max_llm_calls, max_total_tokens, max_cost_usd, max_tasks, max_replans, repeated_work...).",
        [Q(f"sum by (meta_model, outcome, stop_reason) (rate(cutover_pe_runs_total{{{p}}}[{RI}])) * 60",
           "{{meta_model}} {{outcome}} / {{stop_reason}}")],
        PER_MIN, w=12, stack=True,
    )
    board.panel(
        "Run duration p50 / p95 / p99",
        "Wall-clock time of a run, planning to answer.",
        quantiles("cutover_pe_run_duration_seconds", p, "", (0.5, 0.95, 0.99)),
        SECONDS, w=12,
    )
    board.panel(
        "Re-plans",
        "Re-plans the joiner asked for: per minute, and per run.",
        [Q(f"sum by (meta_model) (rate(cutover_pe_replans_total{{{p}}}[{RI}])) * 60", "{{meta_model}} per minute"),
         Q(f"sum by (meta_model) (rate(cutover_pe_replans_total{{{p}}}[{RI}])) "
           f"/ sum by (meta_model) (rate(cutover_pe_runs_total{{{p}}}[{RI}]))", "{{meta_model}} per run")],
        COUNT, w=8,
    )
    board.panel(
        "Plan cache hit rate",
        "Share of plan-cache lookups that found a reusable plan (planner call skipped). Only meta-models with "
        "cache.enabled look up.",
        [Q(f'(sum by (meta_model) (rate(cutover_pe_plan_cache_total{{{p}, result="hit"}}[{RI}])) '
           f"or 0 * sum by (meta_model) (rate(cutover_pe_plan_cache_total{{{p}}}[{RI}]))) "
           f"/ sum by (meta_model) (rate(cutover_pe_plan_cache_total{{{p}}}[{RI}]))", "{{meta_model}}")],
        RATIO, w=8, min_value=0, max_value=1,
    )
    board.panel(
        "Scheduler overhead p99",
        "The scheduler's own time between a task becoming ready and its model call starting, waits excluded.",
        quantiles("cutover_pe_scheduler_overhead_seconds", p, "meta_model", (0.99,), "{{meta_model}} "),
        SECONDS, w=8,
    )
    board.panel(
        "Task queue wait p50 / p99",
        "How long ready tasks waited for a concurrency slot (concurrency, per_alias_concurrency) or for room "
        "in the run's budget: the throttling the limits impose, apart from the scheduler's own cost.",
        quantiles("cutover_pe_task_queue_wait_seconds", p, "meta_model", (0.5, 0.99), "{{meta_model}} "),
        SECONDS, w=8,
    )

    board.row("Work per run")
    board.panel(
        "Tasks per run (mean and p95)",
        "Tasks executed per run.",
        [Q(f"sum by (meta_model) (rate(cutover_pe_tasks_per_run_sum{{{p}}}[{RI}])) "
           f"/ sum by (meta_model) (rate(cutover_pe_tasks_per_run_count{{{p}}}[{RI}]))", "{{meta_model}} mean"),
         *quantiles("cutover_pe_tasks_per_run", p, "meta_model", (0.95,), "{{meta_model}} ")],
        COUNT, w=8,
    )
    board.panel(
        "LLM calls per run (mean and p95)",
        "Model calls per run: planner, executors, joiner, repairs.",
        [Q(f"sum by (meta_model) (rate(cutover_pe_llm_calls_per_run_sum{{{p}}}[{RI}])) "
           f"/ sum by (meta_model) (rate(cutover_pe_llm_calls_per_run_count{{{p}}}[{RI}]))", "{{meta_model}} mean"),
         *quantiles("cutover_pe_llm_calls_per_run", p, "meta_model", (0.95,), "{{meta_model}} ")],
        COUNT, w=8,
    )
    board.panel(
        "Task duration p95 by executor tier",
        "One task's model call, by executor tier (cheap, strong).",
        [Q(f"histogram_quantile(0.95, sum by (meta_model, tier, le) "
           f"(rate(cutover_pe_task_duration_seconds_bucket{{{p}}}[{RI}])))", "{{meta_model}} {{tier}}")],
        SECONDS, w=8,
    )
    board.panel(
        "Tool calls per minute",
        "Tool tasks of runs: calls to MCP servers by outcome (ok, failed), and calls handed back to the client "
        "(handed_back: the client runs them and sends the results in its next request). caps.max_tool_calls "
        "bounds them per run.",
        [Q(f"sum by (meta_model, source, outcome) (rate(cutover_pe_tool_calls_total{{{p}}}[{RI}])) * 60",
           "{{meta_model}} {{source}} {{outcome}}")],
        PER_MIN, w=24,
    )

    board.row("Cost")
    board.panel(
        "Cost per run vs. the same work on the planner model",
        "Mean USD per run (every internal call summed) against what the same tokens would cost on the "
        "planner model: the price of not planning.",
        [Q(f"sum by (meta_model) (rate(cutover_pe_run_cost_usd_sum{{{p}}}[{RI}])) "
           f"/ sum by (meta_model) (rate(cutover_pe_run_cost_usd_count{{{p}}}[{RI}]))", "{{meta_model}} actual"),
         Q(f"sum by (meta_model) (rate(cutover_pe_run_planner_equivalent_cost_usd_sum{{{p}}}[{RI}])) "
           f"/ sum by (meta_model) (rate(cutover_pe_run_planner_equivalent_cost_usd_count{{{p}}}[{RI}]))",
           "{{meta_model}} all on the planner model")],
        USD, w=16,
    )
    board.panel(
        "Saving vs. the planner model",
        "1 - actual cost / planner-equivalent cost over the window (negative: planning cost more).",
        [Q(f"1 - sum by (meta_model) (rate(cutover_pe_run_cost_usd_sum{{{p}}}[{RI}])) "
           f"/ sum by (meta_model) (rate(cutover_pe_run_planner_equivalent_cost_usd_sum{{{p}}}[{RI}]))",
           "{{meta_model}}")],
        RATIO, w=8,
    )
    return board
