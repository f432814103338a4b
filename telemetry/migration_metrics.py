"""Metrics of migrations: per-arm traffic, phases and weights, verdicts and transitions, shadow pairs, the store."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from telemetry import buckets


class MigrationMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.arm_requests = Counter(
            "cutover_migration_requests", "Requests of a migrated alias by arm (baseline, candidate, shadow).",
            ["migration", "arm", "status_class"], registry=registry,
        )
        self.arm_attempts = Counter(
            "cutover_migration_upstream_attempts",
            "Upstream calls to a migration arm's target (first tries, retries, shadow copies), by status class: what "
            "the arm's error gate judges; cutover_migration_requests is what its clients saw.",
            ["migration", "arm", "status_class"], registry=registry,
        )
        self.arm_duration = Histogram(
            "cutover_migration_request_duration_seconds", "Latency per migration arm.",
            ["migration", "arm"], buckets=buckets.LATENCY, registry=registry,
        )
        self.arm_ttft = Histogram(
            "cutover_migration_time_to_first_token_seconds", "Streams: time to first token per migration arm.",
            ["migration", "arm"], buckets=buckets.LATENCY, registry=registry,
        )
        self.arm_cost = Counter(
            "cutover_migration_cost_usd", "Spend per migration arm; the shadow arm is its own ledger.",
            ["migration", "arm"], registry=registry,
        )
        self.phase = Gauge(
            "cutover_migration_phase", "1 for the migration's current phase, 0 for the others.",
            ["migration", "phase"], registry=registry, multiprocess_mode="livemax",
        )
        self.paused_by_gates = Gauge(
            "cutover_migration_paused_by_gates",
            "1 while the migration is paused because a step stayed inconclusive past max_step_s, else 0.",
            ["migration"], registry=registry, multiprocess_mode="livemax",
        )
        self.candidate_weight = Gauge(
            "cutover_migration_candidate_weight_ratio", "Share of live traffic the candidate serves (0..1).",
            ["migration"], registry=registry, multiprocess_mode="livemax",
        )
        self.shadow_share = Gauge(
            "cutover_migration_shadow_ratio", "Share of traffic copied to the shadow arm (0..1).",
            ["migration"], registry=registry, multiprocess_mode="livemax",
        )
        self.verdicts = Counter(
            "cutover_migration_verdicts", "Gate results at each analysis tick.",
            ["migration", "gate", "result"], registry=registry,
        )
        self.transitions = Counter(
            "cutover_migration_transitions", "Migration state changes, by the event that caused them.",
            ["migration", "event", "to_phase"], registry=registry,
        )
        self.rollbacks = Counter(
            "cutover_migration_rollbacks", "Rollbacks, by cause (a gate name, critical, or manual).",
            ["migration", "reason"], registry=registry,
        )
        self.shadow_requests = Counter(
            "cutover_shadow_requests", "Shadow copies: sent, dropped (queue full), excluded, failed, compared.",
            ["migration", "outcome"], registry=registry,
        )
        self.shadow_agreement = Counter(
            "cutover_shadow_agreements", "Compared shadow pairs that agreed, per check (overall = the headline).",
            ["migration", "check"], registry=registry,
        )
        self.quality_checks = Counter(
            "cutover_migration_quality_checks",
            "Answers of compared pairs by arm and cheap check: checked (all of them), json_expected, json_invalid, "
            "tool_answers, tools_invalid, refusal, empty, cut_off.",
            ["migration", "arm", "check"], registry=registry,
        )
        self.judge_calls = Counter(
            "cutover_judge_calls", "Calls of the quality judge by outcome (ok, unreadable, failed).",
            ["migration", "outcome"], registry=registry,
        )
        self.judge_spend = Counter(
            "cutover_judge_cost_usd", "What the quality judge's calls cost: their own ledger.", ["migration"],
            registry=registry,
        )
        self.judge_pairs = Counter(
            "cutover_judge_pairs",
            "Judged pairs by result for the candidate (win, tie, loss, flip: a tie because the judgement changed "
            "with the order), and noise-floor pairs (noise_decisive, noise_tie).",
            ["migration", "result"], registry=registry,
        )
        self.judge_dropped = Counter(
            "cutover_judge_dropped",
            "Sampled pairs not judged: busy (no slot), budget (the hourly cap), excluded; and judged pairs whose "
            "example could not be stored (example_not_stored).",
            ["migration", "reason"], registry=registry,
        )
        self.captured = Counter(
            "cutover_capture_requests",
            "Requests of aliases with `capture` sampled for a pre-flight replay: captured, excluded (offered "
            "tools), dropped (too many writes in flight), failed (the store refused).",
            ["alias", "outcome"], registry=registry,
        )
        self.replayed = Counter(
            "cutover_replay_requests",
            "Captured requests replayed against both arms of a migration: replayed, excluded (naming a "
            "shadow-excluded tool), unreadable, failed (the gateway failed unexpectedly: counted for neither arm).",
            ["migration", "outcome"], registry=registry,
        )
        self.shadow_latency_delta = Histogram(
            "cutover_shadow_latency_delta_seconds", "Shadow minus primary latency for each compared pair.",
            ["migration"], buckets=buckets.DELTA, registry=registry,
        )
        self.shadow_similarity = Histogram(
            "cutover_shadow_similarity", "Text similarity (0..1) of each compared pair with both sides answering.",
            ["migration"], buckets=(0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0), registry=registry,
        )
        self.shadow_cost_delta = Histogram(
            "cutover_shadow_cost_delta_usd", "Shadow minus primary cost for each compared pair.",
            ["migration"], buckets=buckets.COST_DELTA, registry=registry,
        )
        self.store_up = Gauge(
            "cutover_store_up", "1 while the shared state store answers, 0 while it cannot be reached.",
            [], registry=registry, multiprocess_mode="livemin",
        )
        self.controller_leader = Gauge(
            "cutover_controller_leader", "1 in the process that holds the migration controller lease.",
            [], registry=registry, multiprocess_mode="livesum",
        )
