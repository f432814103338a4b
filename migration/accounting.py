"""How a finished client request counts for its migration arm."""

from __future__ import annotations

from collections.abc import Callable

from migration.compare import AnswerSummary
from migration.runtime import Decision, MigrationRuntime
from migration.shadow import ShadowPair, arm_sample
from providers.base import ProviderError, UpstreamStatusError
from routing.table import TargetRef
from telemetry.metrics import Metrics, status_class


def account_primary(
    runtime: MigrationRuntime,
    metrics: Metrics,
    decision: Decision,
    served_by: TargetRef | None,
    arm_failure: ProviderError | None,
    status: int,
    latency_s: float,
    ttft_s: float | None,
    cost_micros: int,
    shadow: ShadowPair | None,
    summary: Callable[[], AnswerSummary],
) -> None:
    """The arm is judged on its own target: if it failed and a fallback answered the client,
    the arm still gets the failure."""
    arm_status = status
    if served_by != decision.arm_target and arm_failure is not None:
        arm_status = arm_failure.status if isinstance(arm_failure, UpstreamStatusError) else 502
    elif served_by is not None and served_by != decision.arm_target:
        # The arm's target was skipped (circuit open after its failures): a fallback's
        # success must not be credited to the arm, or a dead candidate looks healthy.
        arm_status = 503
    mid = decision.migration_id
    metrics.arm_requests.labels(mid, decision.arm, status_class(arm_status)).inc()
    if 200 <= arm_status < 300:
        metrics.arm_duration.labels(mid, decision.arm).observe(latency_s)
        if ttft_s is not None:
            metrics.arm_ttft.labels(mid, decision.arm).observe(ttft_s)
        metrics.arm_cost.labels(mid, decision.arm).inc(cost_micros / 1_000_000)
    outcome = arm_sample(arm_status, latency_s, ttft_s, cost_micros)
    if outcome is not None:
        runtime.record(decision, decision.arm, outcome)
    if shadow is not None:
        shadow.set_primary(summary())
