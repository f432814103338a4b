"""cutover plan-and-execute benchmark: the meta-model's scheduler and cost on simulated upstreams.

    .venv/bin/python bench/planner_bench.py            # full run: 5 measured runs per shape (3-4 min)
    .venv/bin/python bench/planner_bench.py --quick    # 2 measured runs per shape (about 1.5 min)

Starts the simulator (latency: first_token_ms + per_token_ms per completion token; scripted planner and
joiner replies) and the gateway (one worker, one meta-model per plan shape) as their own processes. Each run
sends one plan-and-execute request with the trace on, reads what the simulator saw, and then sends the same
executor requests one after another through the gateway. Reports, per shape, the execution phase against
the sequential time and the plan's critical path, the scheduler's per-task overhead, and the run's cost
against running every step on the planner model. See bench/README.md for the columns and targets.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from bench_report import targets_table
from bench_stack import CpuSnapshot, Proc, cpu_between, free_port, machine_lines, placement, wait_ready
from planner_report import (
    LEGEND,
    MetricsSnapshot,
    Run,
    ShapeResult,
    bucket_diff,
    nearest_rank,
    results_table,
    sum_diff,
    targets,
)
from planner_setup import (
    CHEAP_PRICE,
    EXECUTOR_ALIAS,
    EXECUTOR_MODEL,
    JOINER_MODEL,
    SHAPES,
    STRONG_PRICE,
    Http,
    Shape,
    gateway_settings,
    revision,
    simulator_settings,
    start_gateway,
    start_simulator,
    task_id_of,
)

PATH = "/v1/chat/completions"
MILLION = Decimal(1_000_000)
HTTP_TIMEOUT_S = 150.0  # above the meta-model's default 120 s deadline


class BadRun(Exception):
    """A run that did not go as scripted (retries, a repair, a failed task...): reported, not measured."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def price(tokens_in: int, tokens_out: int, pair: tuple[Decimal, Decimal]) -> Decimal:
    return (tokens_in * pair[0] + tokens_out * pair[1]) / MILLION


@dataclass
class Stack:
    simulator: Proc
    gateway: Proc
    sim: Http
    gw: Http

    def metrics(self) -> MetricsSnapshot:
        status, _, body = self.gw.call("GET", "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return MetricsSnapshot.parse(body.decode())

    def cpu(self) -> CpuSnapshot:
        return CpuSnapshot.take(self.gateway, [self.simulator, self.gateway])


def one_run(stack: Stack, shape: Shape) -> Run:
    stack.sim.json("DELETE", "/_sim/requests")
    body = {"model": shape.meta_model, "messages": [{"role": "user", "content": shape.goal}],
            "cutover": {"trace": True}}
    started = time.perf_counter()
    status, headers, raw = stack.gw.call("POST", PATH, body)
    run_s = time.perf_counter() - started
    if status != 200:
        raise BadRun(f"HTTP {status}: {raw[:200]!r}")
    data: dict[str, Any] = orjson.loads(raw)
    trace = data["cutover"]["trace"]
    tasks = {t["id"]: t for t in trace["tasks"]}
    bad = [f"{i}: {t['status']}" for i, t in tasks.items() if t["status"] != "ok" or t["attempts"] != 1]
    if data["choices"][0]["finish_reason"] != "stop" or trace["stop_reason"] or bad or len(tasks) != len(shape.tasks):
        raise BadRun(f"finish {data['choices'][0]['finish_reason']}, stop {trace['stop_reason']}, tasks {bad}, "
                     f"notes {trace['notes']}")

    records = stack.sim.json("GET", "/_sim/requests")
    planner = [r for r in records if r["model"] == shape.planner_model]
    joiner = [r for r in records if r["model"] == JOINER_MODEL]
    execs = {task_id_of(r): r for r in records if r["model"] == EXECUTOR_MODEL}
    if len(planner) != 1 or len(joiner) != 1 or len(records) != len(shape.tasks) + 2 or set(execs) != set(tasks):
        raise BadRun(f"the simulator saw {len(records)} requests ({len(planner)} planner, {len(joiner)} joiner), "
                     f"expected {len(shape.tasks) + 2}")
    plan_end = planner[0]["ended_at"]
    gaps = []
    for task in shape.tasks:
        ready = max((execs[d]["ended_at"] for d in task.deps), default=plan_end)
        gaps.append(execs[task.id]["started_at"] - ready)
    ideal = shape.critical_path({i: t["latency_ms"] / 1000 for i, t in tasks.items()})

    calls = trace["calls"]
    usage = data["usage"]
    expected = sum((price(c["prompt_tokens"], c["completion_tokens"], STRONG_PRICE) for c in calls), Decimal(0))
    expected += sum((price(t["prompt_tokens"], t["completion_tokens"], CHEAP_PRICE) for t in tasks.values()),
                    Decimal(0))

    seq_s = 0.0
    for task in shape.tasks:  # the same requests, one after another
        replay = {**execs[task.id]["body"], "model": EXECUTOR_ALIAS}
        started = time.perf_counter()
        status, _, raw = stack.gw.call("POST", PATH, replay)
        seq_s += time.perf_counter() - started
        if status != 200:
            raise BadRun(f"sequential replay of {task.id}: HTTP {status}")
    return Run(
        run_s=run_s,
        plan_s=sum(c["latency_ms"] for c in calls if c["role"] in ("plan", "repair")) / 1000,
        join_s=sum(c["latency_ms"] for c in calls if c["role"] == "join") / 1000,
        exec_s=joiner[0]["started_at"] - plan_end,
        seq_s=seq_s,
        ideal_s=ideal,
        gaps_s=gaps,
        cost=Decimal(headers.get("x-cutover-cost-usd", "0")),
        equivalent=price(usage["prompt_tokens"], usage["completion_tokens"], STRONG_PRICE),
        expected_cost=expected,
    )


def wait_for_quiet(stack: Stack, threshold: float, max_wait_s: float) -> float:
    """Wait (bounded) until other processes use less than `threshold` cores; returns their load."""
    deadline = time.monotonic() + max_wait_s
    while True:
        before = stack.cpu()
        time.sleep(0.5)
        load = cpu_between(before, stack.cpu()).background_cores
        if load <= threshold or time.monotonic() >= deadline:
            return load


def measure_shape(stack: Stack, shape: Shape, args: argparse.Namespace) -> ShapeResult:
    for _ in range(args.warmup):
        try:
            one_run(stack, shape)
        except BadRun as exc:
            log(f"{shape.name}: warm-up run went wrong: {exc}")
    load = wait_for_quiet(stack, args.quiet_threshold, args.quiet_wait)
    if load > args.quiet_threshold:
        log(f"{shape.name}: other processes use {load:.0%} of a core; measuring anyway")
    before, cpu_before = stack.metrics(), stack.cpu()
    runs: list[Run] = []
    issues: list[str] = []
    for index in range(args.reps):
        try:
            run = one_run(stack, shape)
        except BadRun as exc:
            issues.append(f"run {index + 1} not measured: {exc}")
            log(f"{shape.name} run {index + 1}: {exc}")
            continue
        runs.append(run)
        log(f"{shape.name:22} run {index + 1}/{args.reps}: exec {run.exec_s * 1000:6.0f} ms, "
            f"seq {run.seq_s * 1000:6.0f} ms (x{run.speedup:.2f}), {run.share:5.1f}% of ideal, "
            f"saved {run.saving:.1f}%")
        if abs(run.cost - run.expected_cost) > Decimal("1e-9"):
            issues.append(f"run {index + 1}: cost header {run.cost} differs from the trace's tokens x prices "
                          f"{run.expected_cost}")
    cpu = cpu_between(cpu_before, stack.cpu())
    after = stack.metrics()
    result = ShapeResult(
        shape, runs, args.reps - len(runs), bucket_diff(before, after, shape.meta_model),
        sum_diff(before.equivalent, after.equivalent, shape.meta_model),
        sum_diff(before.cost, after.cost, shape.meta_model), cpu.background_cores, issues,
    )
    check_metrics(result)
    return result


def check_metrics(res: ShapeResult) -> None:
    """The run histograms must agree with what the responses said."""
    total, count = res.metric_equivalent
    if count != len(res.runs) + res.failed:
        res.issues.append(f"cutover_pe_run_planner_equivalent_cost_usd counted {count:g} runs, "
                          f"expected {len(res.runs) + res.failed}")
    mine = float(sum((r.equivalent for r in res.runs), Decimal(0)))
    if res.runs and not res.failed and abs(total - mine) > 1e-9 * max(1.0, len(res.runs)):
        res.issues.append(f"cutover_pe_run_planner_equivalent_cost_usd sum {total:.6f} != the runs' usage at the "
                          f"planner price {mine:.6f}")
    cost_total, _ = res.metric_cost
    mine = float(sum((r.cost for r in res.runs), Decimal(0)))
    if res.runs and not res.failed and abs(cost_total - mine) > 1e-9 * max(1.0, len(res.runs)):
        res.issues.append(f"cutover_pe_run_cost_usd sum {cost_total:.6f} != the cost headers' sum {mine:.6f}")
    tasks = int(res.overhead_buckets.get(float("inf"), 0))
    expected = sum(len(res.shape.tasks) for _ in res.runs)
    if not res.failed and tasks != expected:
        res.issues.append(f"{tasks} scheduler-overhead samples for {expected} tasks")


def gap_pair(res: ShapeResult, with_deps: bool) -> str:
    picked = [i for i, t in enumerate(res.shape.tasks) if bool(t.deps) == with_deps]
    gaps = [r.gaps_s[i] for r in res.runs for i in picked]
    p50, p95 = nearest_rank(gaps, 0.50), nearest_rank(gaps, 0.95)
    return "-" if p50 is None or p95 is None else f"{p50 * 1000:.2f}/{p95 * 1000:.2f}"


def notes(results: list[ShapeResult]) -> list[str]:
    lines = []
    for res in results:
        med = res.median
        if res.runs:
            lines.append(f"{res.shape.name:22} planner call {(med('plan_s') or 0) * 1000:5.0f} ms, execution "
                         f"{(med('exec_s') or 0) * 1000:5.0f} ms, joiner call {(med('join_s') or 0) * 1000:4.0f} ms "
                         f"(medians); tasks' max_tokens {', '.join(str(t.max_tokens) for t in res.shape.tasks)}")
            lines.append(f"{'':22} gap p50/p95: tasks without deps (plan -> task) {gap_pair(res, False)} ms, "
                         f"tasks with deps (last dep -> task) {gap_pair(res, True)} ms")
        lines += [f"  ! {issue}" for issue in res.issues]
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 measured runs per shape instead of 5")
    parser.add_argument("--reps", type=int, help="measured runs per shape (default 5; --quick 2)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs per shape first (default 1)")
    parser.add_argument("--first-token-ms", type=float, default=200.0, help="simulated latency before any token")
    parser.add_argument("--per-token-ms", type=float, default=2.0, help="simulated latency per completion token")
    parser.add_argument("--gateway-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1, help="core of the simulator and this client")
    parser.add_argument("--quiet-threshold", type=float, default=0.25,
                        help="background CPU (cores) a shape waits to fall below, and marks with '!'")
    parser.add_argument("--quiet-wait", type=float, help="seconds a shape may wait for quiet (default 15; --quick 5)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any target is missed")
    args = parser.parse_args(argv)
    if args.reps is None:
        args.reps = 2 if args.quick else 5
    if args.quiet_wait is None:
        args.quiet_wait = 5.0 if args.quick else 15.0
    if args.reps < 1 or args.warmup < 0 or args.first_token_ms < 0 or args.per_token_ms < 0:
        parser.error("need --reps >= 1, --warmup >= 0 and non-negative latencies")
    return args


def header_lines(args: argparse.Namespace, place: str, cores: int) -> list[str]:
    lines = [f"cutover plan-and-execute benchmark{' (--quick)' if args.quick else ''}", *machine_lines()]
    lines[2] = lines[2].replace("machine     ", f"machine     usable cores={cores}  ", 1)
    lines[4] = f"revision    {revision()}"
    strong, cheap = STRONG_PRICE, CHEAP_PRICE
    return [
        *lines,
        f"placement   {place}",
        f"upstream    simulator, every call {args.first_token_ms:g} ms + {args.per_token_ms:g} ms per completion "
        "token (non-stream); tasks 60-140 tokens",
        f"prices      planner and joiner ${strong[0]} / ${strong[1]} per M tokens in/out; executors ${cheap[0]} / "
        f"${cheap[1]}",
        f"runs        {args.warmup} warm-up + {args.reps} measured per shape; fast path off; one meta-model per "
        "shape",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cores = len(os.sched_getaffinity(0))
    gw_core, client_core = (args.gateway_core, args.client_core) if cores >= 2 else (None, None)
    header = header_lines(args, placement(gw_core, client_core), cores)
    started = time.monotonic()
    results: list[ShapeResult] = []
    with tempfile.TemporaryDirectory(prefix="cutover-pe-bench-") as tmp:
        workdir = Path(tmp)
        sim_port, gw_port = free_port(), free_port()
        simulator = start_simulator(workdir, sim_port, client_core,
                                    simulator_settings(SHAPES, args.first_token_ms, args.per_token_ms))
        gateway: Proc | None = None
        stack: Stack | None = None
        try:
            wait_ready(simulator, sim_port, "/v1/models")
            gateway = start_gateway(workdir, gw_port, gw_core, gateway_settings(SHAPES, sim_port))
            wait_ready(gateway, gw_port, "/readyz")
            stack = Stack(simulator, gateway, Http(sim_port, HTTP_TIMEOUT_S), Http(gw_port, HTTP_TIMEOUT_S))
            served = {m["id"] for m in stack.gw.json("GET", "/v1/models")["data"]}
            missing = [s.meta_model for s in SHAPES if s.meta_model not in served]
            if missing:
                raise RuntimeError(f"gateway does not serve {missing}:\n{gateway.log_tail()}")
            for shape in SHAPES:
                log(f"{shape.name}: {len(shape.tasks)} tasks, limits {shape.limits_label()}")
                results.append(measure_shape(stack, shape, args))
        finally:
            if stack is not None:
                stack.gw.close()
                stack.sim.close()
            if gateway is not None:
                gateway.stop()
            simulator.stop()
    print("\n".join(header))
    print()
    print(results_table(results, args.quiet_threshold))
    print(LEGEND.format(noisy=args.quiet_threshold))
    print()
    print("\n".join(notes(results)))
    print()
    checks = targets(results)
    print(targets_table(checks))
    print(f"\n(run took {time.monotonic() - started:.0f} s; targets do not apply to the '@ defaults' row)")
    missed = [t for t in checks if t.verdict == "MISS"]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
