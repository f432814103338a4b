"""Every Prometheus metric the gateway exports, defined once.

Labels come from configuration (alias, provider, upstream model), from a fixed
set (status class, token kind, stream), never from request text, so
cardinality is bounded by the config. With several workers, prometheus_client's
multiprocess mode is used: set PROMETHEUS_MULTIPROC_DIR before start-up (the CLI
does) and /metrics aggregates every worker's files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from telemetry.hot import HotCounter, HotGauge, HotHistogram

# Gateway-side latencies are sub-millisecond; upstream ones run to minutes.
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.8, 1, 2.5, 5, 10, 30, 60, 120)

_DELTA_BUCKETS = (-5, -1, -0.5, -0.25, -0.1, -0.05, -0.01, 0, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 5)
_COST_DELTA_BUCKETS = (-0.01, -0.001, -0.0001, -0.00001, -0.000001, 0, 0.000001, 0.00001, 0.0001, 0.001, 0.01)

_COUNT_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
_RUN_COST_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5)

UNKNOWN = "unknown"


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


@dataclass(frozen=True, slots=True)
class RequestSeries:
    requests: HotCounter
    duration: HotHistogram
    overhead: HotHistogram
    prompt_tokens: HotCounter
    completion_tokens: HotCounter
    cached_tokens: HotCounter
    cost: HotCounter


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cutover_requests", "Client requests answered, by outcome.",
            ["endpoint", "alias", "provider", "model", "status_class"], registry=r,
        )
        self.request_duration = Histogram(
            "cutover_request_duration_seconds", "Whole request time as the client saw it (to the last byte).",
            ["endpoint", "alias", "provider", "stream"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.overhead = Histogram(
            "cutover_gateway_overhead_seconds", "Time spent in the gateway itself, upstream waits excluded.",
            ["endpoint", "alias"], buckets=_OVERHEAD_BUCKETS, registry=r,
        )
        self.upstream_duration = Histogram(
            "cutover_upstream_duration_seconds", "One upstream attempt, send to full answer (or first event).",
            ["provider", "model", "outcome"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.ttft = Histogram(
            "cutover_time_to_first_token_seconds", "Streams: request arrival to the first event sent to the client.",
            ["alias", "provider"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.tokens = Counter(
            "cutover_tokens", "Tokens billed, by kind (prompt, completion, cached).",
            ["alias", "provider", "model", "kind"], registry=r,
        )
        self.cost = Counter(
            "cutover_cost_usd", "Spend in USD at configured prices.",
            ["alias", "provider", "model"], registry=r,
        )
        self.retries = Counter(
            "cutover_upstream_retries", "Upstream attempts retried on the same target, by failure kind.",
            ["provider", "model", "reason"], registry=r,
        )
        self.upstream_errors = Counter(
            "cutover_upstream_errors", "Failed upstream attempts, by failure kind.",
            ["provider", "model", "reason"], registry=r,
        )
        self.fallbacks = Counter(
            "cutover_fallbacks", "Requests moved past a target to the next one in the alias's list.",
            ["alias", "provider", "model"], registry=r,
        )
        self.cooldowns = Counter(
            "cutover_cooldowns", "Times a target's circuit opened and it was put on cool-down.",
            ["provider", "model"], registry=r,
        )
        self.in_flight = Gauge(
            "cutover_in_flight_requests", "Client requests being served now.",
            ["endpoint"], registry=r, multiprocess_mode="livesum",
        )
        self.truncations = Counter(
            "cutover_context_truncations", "Requests whose oldest messages were dropped to fit the context window.",
            ["alias"], registry=r,
        )
        self.stream_errors = Counter(
            "cutover_stream_errors", "Streams that broke after their first byte reached the client.",
            ["alias", "provider"], registry=r,
        )

        self._series: dict[tuple[str, ...], RequestSeries] = {}
        self._hot_histograms: dict[tuple[Histogram, tuple[str, ...]], HotHistogram] = {}
        self._define_migration_metrics(r)
        self._define_planner_metrics(r)

    def _define_planner_metrics(self, r: CollectorRegistry) -> None:
        self.pe_runs = Counter(
            "cutover_pe_runs", "Plan-and-execute runs by finish reason (stop, length, error) and stop reason.",
            ["meta_model", "outcome", "stop_reason"], registry=r,
        )
        self.pe_tasks = Histogram(
            "cutover_pe_tasks_per_run", "Tasks executed per run.", ["meta_model"], buckets=_COUNT_BUCKETS, registry=r,
        )
        self.pe_llm_calls = Histogram(
            "cutover_pe_llm_calls_per_run", "Model calls per run (planner, executors, joiner).", ["meta_model"],
            buckets=_COUNT_BUCKETS, registry=r,
        )
        self.pe_replans = Counter("cutover_pe_replans", "Re-plans.", ["meta_model"], registry=r)
        self.pe_cost = Histogram(
            "cutover_pe_run_cost_usd", "What a run cost, every internal call summed.", ["meta_model"],
            buckets=_RUN_COST_BUCKETS, registry=r,
        )
        self.pe_equivalent_cost = Histogram(
            "cutover_pe_run_planner_equivalent_cost_usd",
            "The same run's tokens priced at the planner model: what running every step on it would cost.",
            ["meta_model"], buckets=_RUN_COST_BUCKETS, registry=r,
        )
        self.pe_duration = Histogram(
            "cutover_pe_run_duration_seconds", "Wall-clock time of a run.", ["meta_model"], buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.pe_task_duration = Histogram(
            "cutover_pe_task_duration_seconds", "One task, by executor tier.", ["meta_model", "tier"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.pe_cache = Counter(
            "cutover_pe_plan_cache", "Plan cache lookups by result (hit, miss).", ["meta_model", "result"], registry=r,
        )
        self.pe_overhead = Histogram(
            "cutover_pe_scheduler_overhead_seconds",
            "The scheduler's own time between a task becoming ready and its call, waits excluded.",
            ["meta_model"], buckets=_OVERHEAD_BUCKETS, registry=r,
        )
        self.pe_queue_wait = Histogram(
            "cutover_pe_task_queue_wait_seconds",
            "Time a ready task waited for a concurrency slot or for room in the run's budget.",
            ["meta_model"], buckets=_LATENCY_BUCKETS, registry=r,
        )

    def _define_migration_metrics(self, r: CollectorRegistry) -> None:
        self.arm_requests = Counter(
            "cutover_migration_requests", "Requests of a migrated alias by arm (baseline, candidate, shadow).",
            ["migration", "arm", "status_class"], registry=r,
        )
        self.arm_duration = Histogram(
            "cutover_migration_request_duration_seconds", "Latency per migration arm.",
            ["migration", "arm"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.arm_ttft = Histogram(
            "cutover_migration_time_to_first_token_seconds", "Streams: time to first token per migration arm.",
            ["migration", "arm"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.arm_cost = Counter(
            "cutover_migration_cost_usd", "Spend per migration arm; the shadow arm is its own ledger.",
            ["migration", "arm"], registry=r,
        )
        self.phase = Gauge(
            "cutover_migration_phase", "1 for the migration's current phase, 0 for the others.",
            ["migration", "phase"], registry=r, multiprocess_mode="livemax",
        )
        self.paused_by_gates = Gauge(
            "cutover_migration_paused_by_gates",
            "1 while the migration is paused because a step stayed inconclusive past max_step_s, else 0.",
            ["migration"], registry=r, multiprocess_mode="livemax",
        )
        self.candidate_weight = Gauge(
            "cutover_migration_candidate_weight_ratio", "Share of live traffic the candidate serves (0..1).",
            ["migration"], registry=r, multiprocess_mode="livemax",
        )
        self.shadow_share = Gauge(
            "cutover_migration_shadow_ratio", "Share of traffic copied to the shadow arm (0..1).",
            ["migration"], registry=r, multiprocess_mode="livemax",
        )
        self.verdicts = Counter(
            "cutover_migration_verdicts", "Gate results at each analysis tick.",
            ["migration", "gate", "result"], registry=r,
        )
        self.transitions = Counter(
            "cutover_migration_transitions", "Migration state changes, by the event that caused them.",
            ["migration", "event", "to_phase"], registry=r,
        )
        self.rollbacks = Counter(
            "cutover_migration_rollbacks", "Rollbacks, by cause (a gate name, critical, or manual).",
            ["migration", "reason"], registry=r,
        )
        self.shadow_requests = Counter(
            "cutover_shadow_requests", "Shadow copies: sent, dropped (queue full), excluded, failed, compared.",
            ["migration", "outcome"], registry=r,
        )
        self.shadow_agreement = Counter(
            "cutover_shadow_agreements", "Compared shadow pairs that agreed, per check (overall = the headline).",
            ["migration", "check"], registry=r,
        )
        self.shadow_latency_delta = Histogram(
            "cutover_shadow_latency_delta_seconds", "Shadow minus primary latency for each compared pair.",
            ["migration"], buckets=_DELTA_BUCKETS, registry=r,
        )
        self.shadow_similarity = Histogram(
            "cutover_shadow_similarity", "Text similarity (0..1) of each compared pair with both sides answering.",
            ["migration"], buckets=(0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0), registry=r,
        )
        self.shadow_cost_delta = Histogram(
            "cutover_shadow_cost_delta_usd", "Shadow minus primary cost for each compared pair.",
            ["migration"], buckets=_COST_DELTA_BUCKETS, registry=r,
        )
        self.store_up = Gauge(
            "cutover_store_up", "1 while the shared state store answers, 0 while it cannot be reached.",
            [], registry=r, multiprocess_mode="livemin",
        )
        self.controller_leader = Gauge(
            "cutover_controller_leader", "1 in the process that holds the migration controller lease.",
            [], registry=r, multiprocess_mode="livesum",
        )

    def request_series(
        self, endpoint: str, alias: str, provider: str, model: str, status_class: str, stream: bool
    ) -> RequestSeries:
        """The labelled children one request updates, cached: `labels()` costs more than the update."""
        key = (endpoint, alias, provider, model, status_class, "true" if stream else "false")
        series = self._series.get(key)
        if series is None:
            series = RequestSeries(
                requests=HotCounter(self.requests.labels(endpoint, alias, provider, model, status_class)),
                duration=HotHistogram(self.request_duration.labels(endpoint, alias, provider, key[5])),
                overhead=HotHistogram(self.overhead.labels(endpoint, alias)),
                prompt_tokens=HotCounter(self.tokens.labels(alias, provider, model, "prompt")),
                completion_tokens=HotCounter(self.tokens.labels(alias, provider, model, "completion")),
                cached_tokens=HotCounter(self.tokens.labels(alias, provider, model, "cached")),
                cost=HotCounter(self.cost.labels(alias, provider, model)),
            )
            self._series[key] = series
        return series

    def in_flight_gauge(self, endpoint: str) -> HotGauge:
        return HotGauge(self.in_flight.labels(endpoint))

    def upstream_ok_latency(self, provider: str, model: str) -> HotHistogram:
        """Every successful upstream call observes it."""
        return self._hot_histogram(self.upstream_duration, provider, model, "ok")

    def ttft_for(self, alias: str, provider: str) -> HotHistogram:
        """Every stream observes it."""
        return self._hot_histogram(self.ttft, alias, provider)

    def _hot_histogram(self, histogram: Histogram, *labels: str) -> HotHistogram:
        """Cached per labelled child: `labels()` costs more than the update."""
        key = (histogram, labels)
        hot = self._hot_histograms.get(key)
        if hot is None:
            hot = self._hot_histograms[key] = HotHistogram(histogram.labels(*labels))
        return hot

    def exposition(self) -> bytes:
        directory = multiprocess_dir()
        if directory:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=directory)
            return generate_latest(registry)
        return generate_latest(self.registry)


def status_class(status: int) -> str:
    return f"{status // 100}xx"
