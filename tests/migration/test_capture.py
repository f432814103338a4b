"""Capturing requests for a pre-flight replay, in-process on the memory store (no network)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from config.schema import CaptureSettings
from migration.capture import MAX_RECORD_BYTES, MAX_WRITES_IN_FLIGHT, Capture, CapturedRequest
from store.base import StoreUnavailable
from store.memory import MemoryStore
from telemetry.migration_metrics import MigrationMetrics

HI = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}
TOOLS = {**HI, "tools": [{"type": "function", "function": {"name": "lookup"}}]}


def rig(settings: dict[str, CaptureSettings], draws: list[float] | None = None) -> tuple[Capture, MemoryStore,
                                                                                      MigrationMetrics]:
    store, metrics = MemoryStore(), MigrationMetrics(CollectorRegistry())
    values = iter(draws) if draws is not None else None
    capture = Capture(store, settings, metrics, rng=(lambda: next(values)) if values is not None else lambda: 0.0,
                      wall=lambda: 1000.0)
    return capture, store, metrics


def count(metrics: MigrationMetrics, alias: str, outcome: str) -> float:
    return float(metrics.captured.labels(alias, outcome)._value.get())


async def test_a_sampled_share_is_kept_with_what_a_replay_needs() -> None:
    capture, _, metrics = rig({"gpt-4": CaptureSettings(sample=0.25)}, draws=[0.1, 0.3, 0.24, 0.9])
    for stream in (False, True, True, False):
        capture.offer("gpt-4", HI, stream, "/chat/completions")
    capture.offer("other", HI, False, "/chat/completions")  # no capture: not even a draw
    await capture.settle()
    found, unreadable = await capture.captured("gpt-4")
    assert found == [CapturedRequest(1000.0, "/chat/completions", False, HI),
                     CapturedRequest(1000.0, "/chat/completions", True, HI)]
    assert unreadable == 0 and count(metrics, "gpt-4", "captured") == 2
    assert (await capture.captured("other")) == ([], 0)


async def test_requests_offering_tools_stay_out_with_exclude_tools() -> None:
    capture, _, metrics = rig({"gpt-4": CaptureSettings(sample=1.0, exclude_tools=True)})
    capture.offer("gpt-4", TOOLS, False, "/chat/completions")
    capture.offer("gpt-4", HI, False, "/chat/completions")
    await capture.settle()
    found, _ = await capture.captured("gpt-4")
    assert [r.payload for r in found] == [HI] and count(metrics, "gpt-4", "excluded") == 1


async def test_writes_in_flight_are_bounded_and_a_refused_write_is_counted() -> None:
    capture, store, metrics = rig({"gpt-4": CaptureSettings(sample=1.0)})
    release = asyncio.Event()
    original = store.add_sample

    async def slow(*args: object, **kwargs: object) -> None:
        await release.wait()
        await original(*args, **kwargs)  # type: ignore[arg-type]

    store.add_sample = slow  # type: ignore[method-assign]
    for _ in range(MAX_WRITES_IN_FLIGHT + 3):
        capture.offer("gpt-4", HI, False, "/chat/completions")
    assert count(metrics, "gpt-4", "dropped") == 3
    release.set()
    await capture.settle()
    assert count(metrics, "gpt-4", "captured") == MAX_WRITES_IN_FLIGHT

    store.available = False
    capture.offer("gpt-4", HI, False, "/chat/completions")
    await capture.settle()
    assert count(metrics, "gpt-4", "failed") == 1


async def test_the_newest_are_kept_and_unreadable_records_are_skipped() -> None:
    capture, store, _ = rig({"gpt-4": CaptureSettings(sample=1.0, max_requests=3)})
    for i in range(5):
        capture.offer("gpt-4", {**HI, "user": f"u{i}"}, False, "/chat/completions")
        await capture.settle()
    await store.add_sample("capture", "gpt-4", b"not json", 60.0, 3)
    found, unreadable = await capture.captured("gpt-4")
    assert [r.payload["user"] for r in found] == ["u3", "u4"] and unreadable == 1
    assert await capture.captured("gpt-4", limit=1) == ([], 1)  # the newest is the unreadable one
    store.available = False
    with pytest.raises(StoreUnavailable):  # the replay answers 503, as for any store outage
        await capture.captured("gpt-4")


async def test_a_request_over_a_mebibyte_is_not_kept() -> None:
    capture, _, metrics = rig({"gpt-4": CaptureSettings(sample=1.0)})
    big = {**HI, "messages": [{"role": "user", "content": "x" * (MAX_RECORD_BYTES + 1)}]}
    capture.offer("gpt-4", big, False, "/chat/completions")
    await capture.settle()
    assert (await capture.captured("gpt-4")) == ([], 0) and count(metrics, "gpt-4", "too_large") == 1
