"""ArmAccounting: how a finished request counts for its arm, read from the request's frozen record alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from metering.usage import Usage
from migration.accounting import ArmAccounting
from migration.live import Decision, LiveMigrations
from migration.rollout import MigrationState
from migration.shadow import ShadowPair
from migration.window import ArmWindow, Sample
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


def window_after(*requests: Finished) -> tuple[ArmWindow, Metrics]:
    metrics = Metrics()
    live = LiveMigrations(metrics.migration, rng=lambda: 0.5)
    live.apply(SPEC, MigrationState("canary", 0, 10_000, 0.0, 100.0, version=1))
    accounting = ArmAccounting(live, metrics.migration)
    for request in requests:
        accounting.account(DECISION, None, request)
    window = live.local_window(MIGRATION_ID)
    assert window is not None
    return window.candidate, metrics


def test_every_attempt_on_the_arms_target_counts_and_the_client_outcome_beside_it() -> None:
    # The first attempt failed, the retry answered: the upstream failed once, the client saw a success.
    retried = Finished(attempts=(failed(CAND, 502), AttemptRecord(CAND, 200, 0.1)))
    arm, metrics = window_after(retried, Finished())
    assert (arm.attempts, arm.attempt_errors, arm.requests, arm.errors) == (3, 1, 2, 0)
    assert arm.latency.total == 2
    labels = {"migration": MIGRATION_ID, "arm": "candidate"}
    assert metrics.registry.get_sample_value(
        "cutover_migration_upstream_attempts_total", {**labels, "status_class": "5xx"}) == 1
    assert metrics.registry.get_sample_value(
        "cutover_migration_upstream_attempts_total", {**labels, "status_class": "2xx"}) == 2


def test_a_fallback_answer_is_the_clients_success_but_not_the_arms() -> None:
    # The candidate failed twice, the baseline answered.
    served = Finished(served_by=BASE, attempts=(failed(CAND, 500), failed(CAND, 504, "timeout"),
                                                AttemptRecord(BASE, 200, 0.1)))
    arm, _ = window_after(served)
    assert (arm.attempts, arm.attempt_errors, arm.requests, arm.errors) == (2, 2, 1, 0)
    assert arm.latency.total == 0 and arm.cost.count == 0


def test_a_skipped_arm_counts_one_failed_attempt() -> None:
    # The candidate's circuit was open: a dead candidate must not look healthy while the baseline answers.
    arm, _ = window_after(Finished(served_by=BASE, attempts=(AttemptRecord(BASE, 200, 0.1),)))
    assert (arm.attempts, arm.attempt_errors, arm.requests, arm.errors) == (1, 1, 1, 0)


def test_the_clients_own_faults_count_for_nothing() -> None:
    arm, _ = window_after(Finished(status=422, served_by=None, attempts=(failed(CAND, 422, "http_4xx"),)),
                          Finished(status=400, served_by=None, attempts=()))
    assert (arm.attempts, arm.requests) == (0, 0)


def test_rate_limits_are_counted_apart() -> None:
    limited = Finished(status=429, served_by=None, attempts=(failed(CAND, 429, "rate_limited"),) * 2)
    arm, _ = window_after(limited)
    assert (arm.attempts, arm.attempt_rate_limited, arm.requests, arm.rate_limited) == (0, 2, 0, 1)


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
