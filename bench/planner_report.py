"""The plan-and-execute benchmark's measurements, medians, table and PASS/MISS targets."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from bench_report import Target, format_table
from planner_setup import Shape
from prometheus_client.parser import text_string_to_metric_families

OVERHEAD_METRIC = "cutover_pe_scheduler_overhead_seconds"
EQUIVALENT_METRIC = "cutover_pe_run_planner_equivalent_cost_usd"
COST_METRIC = "cutover_pe_run_cost_usd"

SPEEDUP_TARGET = 3.5
SHARE_TARGET = 90.0
OVERHEAD_TARGET_MS = 5.0
SAVING_TARGET = 60.0


@dataclass
class Run:
    """One measured plan-and-execute request and, right after it, the same tasks one after another."""

    run_s: float  # the whole request, client side
    plan_s: float  # planner call latency (trace)
    join_s: float  # joiner call latency (trace)
    exec_s: float  # upstream clock: planner answer finished -> joiner request arrived
    seq_s: float  # the same executor requests sent one after another through the gateway
    ideal_s: float  # critical path over the trace's per-task latencies
    gaps_s: list[float]  # per task: its last dependency's (or the plan's) answer finished -> its request arrived
    cost: Decimal  # x-cutover-cost-usd of the run
    equivalent: Decimal  # the run's summed usage priced at the planner model
    expected_cost: Decimal  # the trace's per-call tokens priced by hand (a cross-check of the cost header)

    @property
    def speedup(self) -> float:
        return self.seq_s / self.exec_s

    @property
    def share(self) -> float:
        return 100.0 * self.ideal_s / self.exec_s

    @property
    def saving(self) -> float:
        return 100.0 * float(1 - self.cost / self.equivalent) if self.equivalent else 0.0


@dataclass
class MetricsSnapshot:
    # meta_model -> {bucket upper bound: cumulative count}
    overhead: dict[str, dict[float, float]] = field(default_factory=dict)
    # meta_model -> (sum, count) of the per-run cost histograms
    equivalent: dict[str, tuple[float, float]] = field(default_factory=dict)
    cost: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> MetricsSnapshot:
        snap = cls()
        sums: dict[tuple[str, str], list[float]] = {}
        for family in text_string_to_metric_families(text):
            if family.name not in (OVERHEAD_METRIC, EQUIVALENT_METRIC, COST_METRIC):
                continue
            for sample in family.samples:
                model = sample.labels.get("meta_model", "")
                if family.name == OVERHEAD_METRIC and sample.name.endswith("_bucket"):
                    snap.overhead.setdefault(model, {})[float(sample.labels["le"])] = sample.value
                elif sample.name.endswith(("_sum", "_count")):
                    pair = sums.setdefault((family.name, model), [0.0, 0.0])
                    pair[0 if sample.name.endswith("_sum") else 1] = sample.value
        for (name, model), (total, count) in sums.items():
            target = snap.equivalent if name == EQUIVALENT_METRIC else snap.cost if name == COST_METRIC else None
            if target is not None:
                target[model] = (total, count)
        return snap


def bucket_diff(before: MetricsSnapshot, after: MetricsSnapshot, model: str) -> dict[float, float]:
    old = before.overhead.get(model, {})
    return {le: count - old.get(le, 0.0) for le, count in after.overhead.get(model, {}).items()}


def bucket_quantile(buckets: dict[float, float], q: float) -> float | None:
    """Upper bound (seconds) of the histogram bucket holding the q-quantile (q in 0..1); None if empty."""
    total = buckets.get(math.inf, 0.0)
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    return next(le for le in sorted(buckets) if buckets[le] >= rank)


def sum_diff(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]],
             model: str) -> tuple[float, float]:
    old = before.get(model, (0.0, 0.0))
    new = after.get(model, (0.0, 0.0))
    return new[0] - old[0], new[1] - old[1]


def nearest_rank(samples: Sequence[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@dataclass
class ShapeResult:
    shape: Shape
    runs: list[Run]
    failed: int
    overhead_buckets: dict[float, float]
    metric_equivalent: tuple[float, float]  # (sum, count) of the planner-equivalent histogram over the runs
    metric_cost: tuple[float, float]
    bg_load: float
    issues: list[str] = field(default_factory=list)

    def median(self, attr: str) -> float | None:
        values = [float(getattr(r, attr)) for r in self.runs]
        return statistics.median(values) if values else None

    @property
    def gaps(self) -> list[float]:
        return [g for r in self.runs for g in r.gaps_s]


def _ms(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value * 1000:,.{digits}f}"


def _bound(value: float | None) -> str:
    if value is None:
        return "-"
    return ">0.5s" if math.isinf(value) else f"<={value * 1000:g}"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"{value:.5f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


COLUMNS = ("shape", "tasks", "limits", "runs", "run ms", "exec ms", "seq ms", "speed-up", "ideal ms", "of ideal",
           "sched p50", "sched p95", "gap p50", "gap p95", "cost $", "planner-only $", "saved", "bg load")


def _row(res: ShapeResult, noisy: float) -> list[str]:
    speed = res.median("speedup")
    return [
        res.shape.name, str(len(res.shape.tasks)), res.shape.limits_label(),
        f"{len(res.runs)}" + (f" ({res.failed} bad)" if res.failed else ""),
        _ms(res.median("run_s")), _ms(res.median("exec_s")), _ms(res.median("seq_s")),
        "-" if speed is None else f"x{speed:.2f}", _ms(res.median("ideal_s")), _pct(res.median("share")),
        _bound(bucket_quantile(res.overhead_buckets, 0.50)), _bound(bucket_quantile(res.overhead_buckets, 0.95)),
        _ms(nearest_rank(res.gaps, 0.50), 2), _ms(nearest_rank(res.gaps, 0.95), 2),
        _usd(res.median("cost")), _usd(res.median("equivalent")), _pct(res.median("saving")),
        f"{res.bg_load:.0%}" + ("!" if res.bg_load > noisy else " "),
    ]


LEGEND = """\
Medians over the measured runs of each shape (each run: one plan-and-execute request, then the same executor
requests one after another). run ms: the whole request, client side (planner + tasks + joiner).
exec ms: the execution phase on the upstream's clock, from the planner's answer leaving the simulator to the
joiner's request reaching it; it includes the gateway's handling of both calls and the scheduling of every task.
seq ms: the same executor requests (recorded bodies, same max_tokens) sent one after another through the gateway.
speed-up: seq / exec. ideal ms: critical path of the plan, each task weighted by its latency in the run's trace.
of ideal: ideal / exec (100% = no time lost between tasks). limits: meta-model concurrency/per_alias_concurrency.
sched p50/p95: cutover_pe_scheduler_overhead_seconds (task ready -> its call invoked, waits excluded) for
these runs, as the histogram bucket's upper bound in ms. gap p50/p95: per task, ms from its last dependency's
answer (or the plan's) leaving the simulator to its own request reaching it: the scheduler plus the gateway's
response and request path, on the upstream's clock; pooled over the runs.
cost $: x-cutover-cost-usd of the run. planner-only $: the run's summed tokens priced at the planner model,
i.e. every step on the strong model (what cutover_pe_run_planner_equivalent_cost_usd records). saved: 1 - cost /
planner-only. bg load: CPU used by other processes (or stolen) during the shape's runs; '!' above {noisy:.0%}."""


def results_table(results: Sequence[ShapeResult], noisy: float) -> str:
    return format_table([_row(r, noisy) for r in results], COLUMNS, left=(0, 2))


def targets(results: Sequence[ShapeResult]) -> list[Target]:
    out: list[Target] = []
    scored = [r for r in results if r.shape.targets]
    for res in scored:
        if res.shape.speedup_target:
            out.append(Target(f"speed-up vs one after another, {res.shape.name}", SPEEDUP_TARGET, "x",
                              res.median("speedup"), True, f"median; limits {res.shape.limits_label()}"))
    out += [Target(f"share of ideal critical-path time, {r.shape.name}", SHARE_TARGET, "%", r.median("share"), True,
                   "median") for r in scored]
    buckets: dict[float, float] = {}
    for res in scored:
        for le, count in res.overhead_buckets.items():
            buckets[le] = buckets.get(le, 0.0) + count
    p95 = bucket_quantile(buckets, 0.95)
    n = int(buckets.get(math.inf, 0))
    out.append(Target("scheduler's own overhead p95 (pe histogram)", OVERHEAD_TARGET_MS, "ms",
                      None if p95 is None else p95 * 1000, note=f"{n} tasks; bucket upper bound"))
    gaps = [g for r in scored for g in r.gaps]
    gap95 = nearest_rank(gaps, 0.95)
    out.append(Target("dispatch gap p95 (upstream's clock, + gateway path)", OVERHEAD_TARGET_MS, "ms",
                      None if gap95 is None else gap95 * 1000,
                      note=f"{len(gaps)} tasks; adds the gateway's response and request path"))
    out += [Target(f"cost saved vs every step on the planner, {r.shape.name}", SAVING_TARGET, "%",
                   r.median("saving"), True, "median; published figure ~60%") for r in scored]
    return out
