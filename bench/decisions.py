"""cutover decision-quality benchmark: how often migrations end the right way, and how fast.

    .venv/bin/python bench/decisions.py                   # every row, 1,000 runs each (tens of minutes)
    .venv/bin/python bench/decisions.py --runs 100        # a quicker, coarser table
    .venv/bin/python bench/decisions.py --rows healthy    # rows whose name contains "healthy"

A Monte-Carlo over simulated migrations: synthetic per-attempt outcomes
(decision_streams) on a simulated clock, fed to the gateway's real pure functions
(windows, recent blocks, gates, state machine) with the default plan and gates, and to
two reference policies on the very same streams (decision_policies). A day-long
rollout takes well under a second. Prints one table: per row and policy, the share of
runs rolled back, promoted (serving the candidate at the end) and still held at the
horizon, with 95 % intervals, and the median and p95 time and candidate requests to a
rollback. See bench/README.md, "Decision quality", for the rows, targets and results.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from decision_policies import Cutover, Fixed, Outcome, Plain
from decision_streams import Scenario, Streams

from config.migration import GateThresholds, StepPlan

PLAN = StepPlan()
GATES = GateThresholds()
HOUR = 3600.0
POLICIES = ("cutover", "fixed x1", "fixed x5", "plain bound")


def scenarios() -> list[Scenario]:
    rows = [Scenario(f"healthy @{rate:g}/s", rate) for rate in (0.5, 2, 10, 100)]
    for rate in (2, 10):
        rows += [
            Scenario(f"3% errors @{rate:g}/s", rate, error=0.03),
            Scenario(f"5% errors @{rate:g}/s", rate, error=0.05),
            Scenario(f"10% errors @{rate:g}/s", rate, error=0.10),
            Scenario(f"p99 900 ms @{rate:g}/s", rate, p99_ms=900),
            Scenario(f"p99 1200 ms @{rate:g}/s", rate, p99_ms=1200),
            Scenario(f"cost +8% @{rate:g}/s", rate, cost_increase=0.08),
            Scenario(f"cost +20% @{rate:g}/s", rate, cost_increase=0.20),
        ]
    rows += [Scenario(f"10% errors @{rate:g}/s", rate, error=0.10) for rate in (0.5, 100)]
    # Regressions that start late: at 90 % of the first canary step and of the 100 % step, and 1 h after
    # promotion. Time 0 is the start of that step; the horizon leaves room for the safety window.
    for rate in (2, 10):
        rows += [
            Scenario(f"1%->10% at 90% of a step @{rate:g}/s", rate, start="canary", change_at_s=0.9 * PLAN.min_step_s,
                     changed_error=0.10, horizon_s=12 * HOUR),
            Scenario(f"1%->10% at 90% of the 100% step @{rate:g}/s", rate, start="last",
                     change_at_s=0.9 * PLAN.min_step_s, changed_error=0.10, horizon_s=12 * HOUR),
            Scenario(f"10% errors 1 h after promotion @{rate:g}/s", rate, start="promoted", change_at_s=HOUR,
                     changed_error=0.10, horizon_s=PLAN.safety_window_s + HOUR),
        ]
    return rows


def run_once(scenario: Scenario, seed: int) -> dict[str, Outcome]:
    """One simulated migration, every policy on the same streams."""
    streams = Streams(scenario, seed, PLAN.interval_s)
    policies: list[Cutover | Fixed | Plain] = [
        Cutover(scenario, PLAN, GATES), Fixed(scenario, PLAN, GATES, 1), Fixed(scenario, PLAN, GATES, 5),
        Plain(scenario, PLAN, GATES),
    ]
    ticks = int(scenario.horizon_s / PLAN.interval_s)
    for index in range(ticks):
        live = [p for p in policies if not p.outcome.done]
        if not live:
            break
        t = (index + 1) * PLAN.interval_s
        tick = streams.tick(index)
        for policy in live:
            policy.step(t, tick)
    for policy in policies:
        outcome = policy.outcome
        if not outcome.done:
            outcome.final = "promoted" if outcome.promoted else "held"
    return {p.name: p.outcome for p in policies}


def run_cell(args: tuple[Scenario, int, int]) -> list[dict[str, Outcome]]:
    scenario, first_seed, runs = args
    return [run_once(scenario, seed) for seed in range(first_seed, first_seed + runs)]


@dataclass(frozen=True)
class Row:
    scenario: str
    policy: str
    runs: int
    rolled_back: int
    promoted: int
    held: int
    times: list[float]
    requests: list[int]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre, margin = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z * z / n)), min(1.0, (centre + margin) / (1 + z * z / n))


def share(k: int, n: int) -> str:
    low, high = wilson(k, n)
    return f"{100 * k / n:5.1f}% [{100 * low:4.1f}-{100 * high:5.1f}]"


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 60:.0f} min" if seconds < 10 * HOUR else (
        f"{seconds / HOUR:.1f} h")


def table(rows: list[Row]) -> str:
    header = ("row", "policy", "rolled back [95%]", "promoted [95%]", "held [95%]", "time to rollback p50/p95",
              "candidate reqs p50/p95")
    lines = [header]
    for r in rows:
        t50, t95 = quantile(r.times, 0.5), quantile(r.times, 0.95)
        q50, q95 = quantile([float(x) for x in r.requests], 0.5), quantile([float(x) for x in r.requests], 0.95)
        reqs = "-" if q50 is None else f"{q50:.0f} / {q95:.0f}"
        lines.append((r.scenario, r.policy, share(r.rolled_back, r.runs), share(r.promoted, r.runs),
                      share(r.held, r.runs), f"{duration(t50)} / {duration(t95)}", reqs))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    out.insert(1, "-" * len(out[0]))
    return "\n".join(out)


def summarise(scenario: Scenario, results: list[dict[str, Outcome]]) -> list[Row]:
    rows = []
    for policy in POLICIES:
        outcomes = [r[policy] for r in results]
        back = [o for o in outcomes if o.final == "rolled_back"]
        rows.append(Row(
            scenario.name, policy, len(outcomes), len(back), sum(o.final == "promoted" for o in outcomes),
            sum(o.final == "held" for o in outcomes), [o.at_s or 0.0 for o in back], [o.requests for o in back],
        ))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000, help="runs per row (default 1,000)")
    parser.add_argument("--rows", default="", help="only rows whose name contains this")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    chosen = [s for s in scenarios() if args.rows in s.name]
    if not chosen:
        parser.error(f"no row matches {args.rows!r}")
    began = time.monotonic()
    chunk = max(1, args.runs // (4 * args.workers))
    rows: list[Row] = []
    progress: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    with ProcessPoolExecutor(args.workers) as pool:
        for scenario in chosen:
            started = time.monotonic()
            jobs = [(scenario, seed, min(chunk, args.runs - seed)) for seed in range(0, args.runs, chunk)]
            results = [outcome for part in pool.map(run_cell, jobs) for outcome in part]
            rows += summarise(scenario, results)
            progress(f"{scenario.name}: {len(results)} runs in {time.monotonic() - started:.0f} s")
    print("cutover decision-quality benchmark")
    print(f"plan        default (min_step_s {PLAN.min_step_s:g}, interval_s {PLAN.interval_s:g}, weights "
          f"{PLAN.weights}, safety_window_s {PLAN.safety_window_s:g}); gates default (alpha {GATES.alpha:g})")
    print(f"runs        {args.runs} per row; 95 % Wilson intervals; times from the start of the run")
    print()
    print(table(rows))
    print(f"\n(run took {time.monotonic() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
