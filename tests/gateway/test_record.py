"""The record stage: one frozen record, read by the metrics, the log line and the migration accounting."""

from __future__ import annotations

import os
from dataclasses import replace
from decimal import Decimal
from typing import Any

import orjson
import pytest

from gateway.record import ArmChoice, Recorder, RequestRecord, log_fields
from metering.usage import Usage
from migration.live import Decision
from providers.dispatch import AttemptRecord
from providers.target import TargetRef
from telemetry.metrics import Metrics
from telemetry.request_log import RequestLog

TARGET = TargetRef("up", "real-model")
RECORD = RequestRecord(
    request_id="req_1", endpoint="chat", alias="gpt-4", client="team", stream=True, status=200, error=None,
    served_by=TARGET, attempts=(AttemptRecord(TARGET, 500, 0.1, "http_5xx"), AttemptRecord(TARGET, 200, 0.2)),
    usage=Usage(10, 5, 2), cost=Decimal("0.00002"), latency_s=0.5, overhead_s=0.0004, ttft_s=0.25,
    dropped_messages=1, stream_broke=False, arm=None, answer_data=None, answer_events=(),
)


class Accounting:
    def __init__(self) -> None:
        self.seen: list[tuple[Decision, RequestRecord]] = []

    def account(self, decision: Decision, pair: Any, request: RequestRecord) -> None:
        self.seen.append((decision, request))


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_record_updates_every_request_series() -> None:
    metrics, accounting = Metrics(), Accounting()
    Recorder(metrics.requests, None, accounting).record(RECORD)  # type: ignore[arg-type]
    labels = {"alias": "gpt-4", "provider": "up", "model": "real-model"}
    assert sample(metrics, "cutover_requests_total", endpoint="chat", status_class="2xx", **labels) == 1
    assert sample(metrics, "cutover_tokens_total", kind="prompt", **labels) == 10
    assert sample(metrics, "cutover_tokens_total", kind="completion", **labels) == 5
    assert sample(metrics, "cutover_tokens_total", kind="cached", **labels) == 2
    assert sample(metrics, "cutover_cost_usd_total", **labels) == pytest.approx(0.00002)
    assert sample(metrics, "cutover_time_to_first_token_seconds_count", alias="gpt-4", provider="up") == 1
    assert sample(metrics, "cutover_context_truncations_total", alias="gpt-4") == 1
    assert sample(metrics, "cutover_gateway_overhead_seconds_sum", endpoint="chat", alias="gpt-4") == 0.0004
    assert sample(metrics, "cutover_stream_errors_total", alias="gpt-4", provider="up") is None
    assert accounting.seen == []


def test_a_broken_stream_and_a_meta_model_run() -> None:
    metrics = Metrics()
    recorder = Recorder(metrics.requests, None, Accounting())  # type: ignore[arg-type]
    recorder.record(replace(RECORD, status=502, error="stream_broken", stream_broke=True))
    meta = TargetRef("meta:plan-and-execute", "plan-and-execute")
    recorder.record(replace(RECORD, alias="plan-and-execute", served_by=meta))
    assert sample(metrics, "cutover_stream_errors_total", alias="gpt-4", provider="up") == 1
    # A run's tokens are counted by its own internal calls; the run's sum would count them twice.
    assert sample(metrics, "cutover_tokens_total", alias="plan-and-execute", provider=meta.provider,
                  model=meta.model, kind="prompt") == 0


def test_a_migrated_request_goes_to_the_accounting() -> None:
    decision = Decision("m1", "candidate", (TARGET,), TARGET, None, None, 1.0)
    accounting = Accounting()
    record = replace(RECORD, arm=ArmChoice(decision, None))
    Recorder(Metrics().requests, None, accounting).record(record)  # type: ignore[arg-type]
    assert accounting.seen == [(decision, record)]


async def test_the_log_line() -> None:
    assert log_fields(RECORD) == {
        "request_id": "req_1", "endpoint": "chat", "alias": "gpt-4", "key": "team", "provider": "up",
        "model": "real-model", "stream": True, "status": 200, "latency_ms": 500.0, "overhead_ms": 0.4,
        "attempts": 2, "prompt_tokens": 10, "completion_tokens": 5, "usage_estimated": False,
        "cost_usd": "0.00002", "dropped_messages": 1,
    }
    failed = replace(RECORD, status=401, error="invalid_api_key", served_by=None, usage=None, attempts=(),
                     dropped_messages=0)
    assert log_fields(failed) == {
        "request_id": "req_1", "endpoint": "chat", "alias": "gpt-4", "key": "team", "provider": "unknown",
        "model": "unknown", "stream": True, "status": 401, "latency_ms": 500.0, "overhead_ms": 0.4,
        "attempts": 0, "error": "invalid_api_key",
    }
    r, w = os.pipe()
    try:
        log = RequestLog(w)
        recorder = Recorder(Metrics().requests, log, Accounting())  # type: ignore[arg-type]
        recorder.record(RECORD)
        recorder.record(failed)
        await log.aclose()
        lines = os.read(r, 65536).splitlines()
    finally:
        os.close(r)
        os.close(w)
    parsed = [orjson.loads(line) for line in lines]
    assert [{k: v for k, v in p.items() if k not in ("ts", "level", "logger")} for p in parsed] == [
        log_fields(RECORD), log_fields(failed)
    ]
    assert all(p["level"] == "info" and p["logger"] == "cutover.access" for p in parsed)
