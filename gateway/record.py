"""The last stage: one immutable record of the request, handed to the metrics, the log line and the migration.

The pipeline builds the `RequestRecord` from what its stages returned, after the
client has its answer (or its error). Each consumer reads the record and nothing
else; none of them can reach back into the request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from metering.pricing import format_usd
from metering.usage import Usage
from migration.accounting import ArmAccounting
from migration.live import Decision
from migration.shadow import ShadowPair
from planner.wiring import is_meta_provider
from providers.dispatch import AttemptRecord
from providers.target import TargetRef
from telemetry.metrics import UNKNOWN, status_class
from telemetry.request_log import RequestLog
from telemetry.request_metrics import RequestMetrics


@dataclass(slots=True)
class ArmChoice:
    """The migration's say on this request: its arm, and the shadow copy that went out with it."""

    decision: Final[Decision]
    pair: Final[ShadowPair | None]


@dataclass(slots=True)
class RequestRecord:
    request_id: Final[str]
    endpoint: Final[str]
    alias: Final[str]
    client: Final[str | None]
    stream: Final[bool]
    status: Final[int]
    error: Final[str | None]
    served_by: Final[TargetRef | None]
    attempts: Final[tuple[AttemptRecord, ...]]
    usage: Final[Usage | None]
    cost: Final[Decimal]
    latency_s: Final[float]
    # Time not spent waiting on upstreams or backoff.
    overhead_s: Final[float]
    ttft_s: Final[float | None]
    dropped_messages: Final[int]
    stream_broke: Final[bool]
    arm: Final[ArmChoice | None]
    answer_data: Final[Mapping[str, Any] | None]
    answer_events: Final[Sequence[bytes]]


class Recorder:
    __slots__ = ("_accounting", "_log", "_metrics")
    def __init__(self, metrics: RequestMetrics, log: RequestLog | None, accounting: ArmAccounting) -> None:
        self._metrics = metrics
        self._log = log
        self._accounting = accounting

    def record(self, r: RequestRecord) -> None:
        if r.arm is not None:
            self._accounting.account(r.arm.decision, r.arm.pair, r)
        if self._log is not None:
            self._log.write(log_fields(r))
        m = self._metrics
        provider = r.served_by.provider if r.served_by else UNKNOWN
        model = r.served_by.model if r.served_by else UNKNOWN
        series = m.series(r.endpoint, r.alias, provider, model, status_class(r.status), r.stream)
        series.requests.inc(1)
        series.duration.observe(r.latency_s)
        series.overhead.observe(r.overhead_s)
        # A meta-model's tokens and spend are already counted by its internal calls under their
        # own aliases; counting the run's sum again would double every total over aliases.
        if r.usage is not None and r.served_by is not None and not is_meta_provider(provider):
            series.prompt_tokens.inc(r.usage.prompt_tokens)
            series.completion_tokens.inc(r.usage.completion_tokens)
            if r.usage.cached_tokens:
                series.cached_tokens.inc(r.usage.cached_tokens)
            series.cost.inc(float(r.cost))
        if r.ttft_s is not None:
            m.ttft_for(r.alias, provider).observe(r.ttft_s)
        if r.stream_broke:
            m.stream_errors.labels(r.alias, provider).inc()
        if r.dropped_messages:
            m.truncations.labels(r.alias).inc()


def log_fields(r: RequestRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "request_id": r.request_id,
        "endpoint": r.endpoint,
        "alias": r.alias,
        "key": r.client,
        "provider": r.served_by.provider if r.served_by else UNKNOWN,
        "model": r.served_by.model if r.served_by else UNKNOWN,
        "stream": r.stream,
        "status": r.status,
        "latency_ms": round(r.latency_s * 1000, 3),
        "overhead_ms": round(r.overhead_s * 1000, 3),
        "attempts": len(r.attempts),
    }
    if r.usage is not None:
        fields["prompt_tokens"] = r.usage.prompt_tokens
        fields["completion_tokens"] = r.usage.completion_tokens
        fields["usage_estimated"] = r.usage.estimated
        fields["cost_usd"] = format_usd(r.cost)
    if r.dropped_messages:
        fields["dropped_messages"] = r.dropped_messages
    if r.error:
        fields["error"] = r.error
    return fields

