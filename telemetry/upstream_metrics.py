"""Metrics of upstream attempts, kept by the dispatcher: latency, failures, retries, fallbacks, cool-downs."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from telemetry import buckets
from telemetry.hot import HotHistogram, HotHistograms


class UpstreamMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "cutover_upstream_duration_seconds", "One upstream attempt, send to full answer (or first event).",
            ["provider", "model", "outcome"], buckets=buckets.LATENCY, registry=registry,
        )
        self.retries = Counter(
            "cutover_upstream_retries", "Upstream attempts retried on the same target, by failure kind.",
            ["provider", "model", "reason"], registry=registry,
        )
        self.errors = Counter(
            "cutover_upstream_errors", "Failed upstream attempts, by failure kind.",
            ["provider", "model", "reason"], registry=registry,
        )
        self.fallbacks = Counter(
            "cutover_fallbacks", "Requests moved past a target to the next one in the alias's list.",
            ["alias", "provider", "model"], registry=registry,
        )
        self.cooldowns = Counter(
            "cutover_cooldowns", "Times a target's circuit opened and it was put on cool-down.",
            ["provider", "model"], registry=registry,
        )
        self._hot = HotHistograms()

    def ok_latency(self, provider: str, model: str) -> HotHistogram:
        """Every successful upstream call observes it."""
        return self._hot.child(self.duration, provider, model, "ok")
