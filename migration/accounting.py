"""How a finished client request counts for its migration arm, and what its shadow copy is compared with.

The edge hands over its immutable record of the request (`FinishedRequest` is the
part read here), and the arm gets two things from it:

- every upstream attempt on the arm's target, first tries and retries: what the
  arm's error gate judges. A request whose arm target was skipped (its circuit
  open after failures) and answered by a fallback counts one failed attempt, or a
  dead candidate would look healthy while the baseline answers for it;
- the outcome its client saw, after retries and fallbacks, shown beside it. Its
  latency, time to first token and cost count for the arm only when the arm's own
  target answered.
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
from migration.window import Sample, kind_of
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
        mid, arm, m = decision.migration_id, decision.arm, self._metrics
        status, micros = request.status, to_micros(request.cost)
        answered = request.served_by == decision.arm_target
        m.arm_requests.labels(mid, arm, status_class(status)).inc()
        sample = Sample.of(status, request.latency_s, request.ttft_s, micros)
        if answered and sample is not None and sample.kind == "ok":
            m.arm_duration.labels(mid, arm).observe(request.latency_s)
            if request.ttft_s is not None:
                m.arm_ttft.labels(mid, arm).observe(request.ttft_s)
            m.arm_cost.labels(mid, arm).inc(micros / 1_000_000)
        elif sample is not None and sample.kind == "ok":
            sample = Sample("ok")  # a fallback answered: the client was served, the arm's figures are not its
        tried = [a.status for a in request.attempts if a.target == decision.arm_target]
        if not tried and request.served_by is not None and not answered:
            tried = [503]  # skipped: the arm's circuit was open
        for attempt in tried:
            m.arm_attempts.labels(mid, arm, status_class(attempt)).inc()
        kinds = [kind for kind in map(kind_of, tried) if kind is not None]
        self._live.record(decision, arm, sample, kinds)
        if pair is not None:
            pair.set_primary(primary_summary(request))
