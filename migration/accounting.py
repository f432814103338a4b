"""How a finished client request counts for its migration arm, and what its shadow copy is compared with.

The edge hands over its immutable record of the request (`FinishedRequest` is the
part read here). The arm is judged on its own target: if the arm's target failed
and a fallback answered the client, the arm still gets the failure; if the arm's
target was skipped (its circuit open after failures), a fallback's success is
not credited to it either, or a dead candidate would look healthy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol

from metering.pricing import to_micros
from metering.usage import Usage
from migration.compare import AnswerSummary, summarise_completion, summarise_stream
from migration.live import Decision, LiveMigrations
from migration.shadow import ShadowPair
from migration.window import Sample
from providers.dispatch import AttemptRecord
from providers.target import TargetRef
from telemetry.metrics import status_class
from telemetry.migration_metrics import MigrationMetrics


class FinishedRequest(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def served_by(self) -> TargetRef | None: ...

    @property
    def attempts(self) -> tuple[AttemptRecord, ...]: ...

    @property
    def latency_s(self) -> float: ...

    @property
    def ttft_s(self) -> float | None: ...

    @property
    def usage(self) -> Usage | None: ...

    @property
    def cost(self) -> Decimal: ...

    @property
    def stream(self) -> bool: ...

    # The answer as the client got it; kept only when a shadow copy is compared with it.
    @property
    def answer_data(self) -> Mapping[str, Any] | None: ...

    @property
    def answer_events(self) -> Sequence[bytes]: ...


def arm_status(decision: Decision, request: FinishedRequest) -> int:
    served_by = request.served_by
    if served_by == decision.arm_target:
        return request.status
    failures = [a for a in request.attempts if a.target == decision.arm_target and not a.ok]
    if failures:
        return failures[-1].status
    if served_by is not None:
        return 503  # skipped: the arm's circuit was open
    return request.status


def primary_summary(request: FinishedRequest) -> AnswerSummary:
    usage = request.usage or Usage()
    micros = to_micros(request.cost)
    if request.stream:
        return summarise_stream(request.answer_events, request.status, request.latency_s, request.ttft_s, micros,
                                usage.prompt_tokens, usage.completion_tokens)
    return summarise_completion(request.answer_data or {}, request.status, request.latency_s, micros,
                                usage.prompt_tokens, usage.completion_tokens)


class ArmAccounting:
    def __init__(self, live: LiveMigrations, metrics: MigrationMetrics) -> None:
        self._live = live
        self._metrics = metrics

    def account(self, decision: Decision, pair: ShadowPair | None, request: FinishedRequest) -> None:
        status = arm_status(decision, request)
        mid, arm, m = decision.migration_id, decision.arm, self._metrics
        micros = to_micros(request.cost)
        m.arm_requests.labels(mid, arm, status_class(status)).inc()
        if 200 <= status < 300:
            m.arm_duration.labels(mid, arm).observe(request.latency_s)
            if request.ttft_s is not None:
                m.arm_ttft.labels(mid, arm).observe(request.ttft_s)
            m.arm_cost.labels(mid, arm).inc(micros / 1_000_000)
        sample = Sample.of(status, request.latency_s, request.ttft_s, micros)
        if sample is not None:
            self._live.record(decision, arm, sample)
        if pair is not None:
            pair.set_primary(primary_summary(request))
