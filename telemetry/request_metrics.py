"""Metrics of client requests, kept by the edge's record stage: outcome, latency, overhead, tokens, spend."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from telemetry import buckets
from telemetry.hot import HotCounter, HotGauge, HotHistogram, HotHistograms


@dataclass(frozen=True, slots=True)
class RequestSeries:
    requests: HotCounter
    duration: HotHistogram
    overhead: HotHistogram
    prompt_tokens: HotCounter
    completion_tokens: HotCounter
    cached_tokens: HotCounter
    cost: HotCounter


class RequestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "cutover_requests", "Client requests answered, by outcome.",
            ["endpoint", "alias", "provider", "model", "status_class"], registry=registry,
        )
        self.request_duration = Histogram(
            "cutover_request_duration_seconds", "Whole request time as the client saw it (to the last byte).",
            ["endpoint", "alias", "provider", "stream"], buckets=buckets.LATENCY, registry=registry,
        )
        self.overhead = Histogram(
            "cutover_gateway_overhead_seconds", "Time spent in the gateway itself, upstream waits excluded.",
            ["endpoint", "alias"], buckets=buckets.OVERHEAD, registry=registry,
        )
        self.ttft = Histogram(
            "cutover_time_to_first_token_seconds", "Streams: request arrival to the first event sent to the client.",
            ["alias", "provider"], buckets=buckets.LATENCY, registry=registry,
        )
        self.tokens = Counter(
            "cutover_tokens", "Tokens billed, by kind (prompt, completion, cached).",
            ["alias", "provider", "model", "kind"], registry=registry,
        )
        self.cost = Counter(
            "cutover_cost_usd", "Spend in USD at configured prices.",
            ["alias", "provider", "model"], registry=registry,
        )
        self.in_flight = Gauge(
            "cutover_in_flight_requests", "Client requests being served now.",
            ["endpoint"], registry=registry, multiprocess_mode="livesum",
        )
        self.truncations = Counter(
            "cutover_context_truncations", "Requests whose oldest messages were dropped to fit the context window.",
            ["alias"], registry=registry,
        )
        self.stream_errors = Counter(
            "cutover_stream_errors", "Streams that broke after their first byte reached the client.",
            ["alias", "provider"], registry=registry,
        )

        self._series: dict[tuple[str, ...], RequestSeries] = {}
        self._hot = HotHistograms()

    def series(
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

    def ttft_for(self, alias: str, provider: str) -> HotHistogram:
        """Every stream observes it."""
        return self._hot.child(self.ttft, alias, provider)
