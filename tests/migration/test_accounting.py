"""ArmAccounting: how a finished request counts for its arm, read from the request's frozen record alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from metering.usage import Usage
from migration.accounting import ArmAccounting, arm_status
from migration.live import Decision, LiveMigrations
from migration.rollout import MigrationState
from migration.shadow import ShadowPair
from migration.window import Sample
from providers.dispatch import AttemptRecord
from providers.target import TargetRef
from telemetry.metrics import Metrics
from tests.migration.support import MIGRATION_ID
from tests.migration.values import BACKUP, BASE, CAND, SPEC

DECISION = Decision(MIGRATION_ID, "candidate", (CAND, BASE, BACKUP), CAND, None, None, 100.0)


@dataclass(frozen=True)
class Finished:
    """The fields of gateway.record.RequestRecord that accounting reads."""

    status: int = 200
    served_by: TargetRef | None = CAND
    attempts: tuple[AttemptRecord, ...] = (AttemptRecord(CAND, 200, 0.1),)
    latency_s: float = 0.2
    ttft_s: float | None = None
    usage: Usage | None = field(default_factory=lambda: Usage(10, 5))
    cost: Decimal = Decimal("0.000042")
    stream: bool = False
    answer_data: dict[str, Any] | None = None
    answer_events: tuple[bytes, ...] = ()


def failed(target: TargetRef, status: int, kind: str = "http_5xx") -> AttemptRecord:
    return AttemptRecord(target, status, 0.05, kind)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        # The arm's own target answered: the request's status is the arm's.
        (Finished(), 200),
        (Finished(status=502, attempts=(failed(CAND, 502),)), 502),
        # The arm failed and a fallback answered the client: the arm still gets its failure.
        (Finished(served_by=BASE, attempts=(failed(CAND, 500), failed(CAND, 504, "timeout"),
                                            AttemptRecord(BASE, 200, 0.1))), 504),
        # The arm's target was skipped (circuit open): a fallback's success is not credited to it.
        (Finished(served_by=BASE, attempts=(AttemptRecord(BASE, 200, 0.1),)), 503),
        # Nothing answered and the arm was never tried: the request's own status.
        (Finished(status=400, served_by=None, attempts=()), 400),
        # Nothing answered, the arm refused the request itself: the client's fault, and so counted.
        (Finished(status=422, served_by=None, attempts=(failed(CAND, 422, "http_4xx"),)), 422),
    ],
)
def test_the_arm_is_judged_on_its_own_target(request_: Finished, expected: int) -> None:
    assert arm_status(DECISION, request_) == expected


@pytest.mark.parametrize(
    ("status", "sample"),
    [(200, Sample("ok", 200.0, None, 42)), (429, Sample("rate_limited")), (400, None), (408, Sample("error")),
     (502, Sample("error"))],
)
def test_what_a_status_counts_as(status: int, sample: Sample | None) -> None:
    assert Sample.of(status, 0.2, None, 42) == sample


async def test_a_request_feeds_the_arms_window_metrics_and_its_shadow_pair() -> None:
    metrics = Metrics()
    live = LiveMigrations(metrics.migration, rng=lambda: 0.5)
    live.apply(SPEC, MigrationState("canary", 0, 10_000, 0.0, 100.0, version=1))
    accounting = ArmAccounting(live, metrics.migration)
    pair = ShadowPair()
    answer = {"choices": [{"message": {"content": "hello"}, "finish_reason": "stop"}]}
    accounting.account(DECISION, pair, Finished(answer_data=answer))

    window = live.local_window(MIGRATION_ID)
    assert window is not None and (window.candidate.requests, window.candidate.errors) == (1, 0)
    labels = {"migration": MIGRATION_ID, "arm": "candidate"}
    assert metrics.registry.get_sample_value("cutover_migration_requests_total", {**labels, "status_class": "2xx"}) == 1
    assert metrics.registry.get_sample_value("cutover_migration_cost_usd_total", labels) == pytest.approx(0.000042)
    primary = await pair.primary(1.0)
    assert primary is not None
    assert (primary.status, primary.text, primary.finish_reason, primary.cost_micros) == (200, "hello", "stop", 42)
    assert (primary.prompt_tokens, primary.completion_tokens) == (10, 5)
