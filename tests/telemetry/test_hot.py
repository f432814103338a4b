"""The hot update handles must leave a registry exactly as prometheus_client's public API does."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from telemetry.hot import HotCounter, HotGauge, HotHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0)
# On a bound, between bounds, below the first, above the last (+Inf), zero and a repeat.
AMOUNTS = [0.001, 0.005, 0.0001, 5.0, 0.0, 0.1, 0.1, 1.0, 0.5]


def _fill(registry: CollectorRegistry, hot: bool) -> None:
    counter = Counter("c", "counter", ["a"], registry=registry).labels("x")
    gauge = Gauge("g", "gauge", ["a"], registry=registry, multiprocess_mode="livesum").labels("x")
    histogram = Histogram("h", "histogram", ["a"], buckets=BUCKETS, registry=registry).labels("x")
    if hot:
        hot_counter, hot_gauge, hot_histogram = HotCounter(counter), HotGauge(gauge), HotHistogram(histogram)
        for amount in AMOUNTS:
            hot_counter.inc(amount)
            hot_histogram.observe(amount)
        for _ in range(3):
            hot_gauge.inc()
        hot_gauge.dec()
    else:
        for amount in AMOUNTS:
            counter.inc(amount)
            histogram.observe(amount)
        gauge.inc(3)
        gauge.dec()


def _exposition(hot: bool) -> bytes:
    registry = CollectorRegistry()
    _fill(registry, hot)
    # Creation timestamps differ between the two registries; everything else must not.
    return b"\n".join(line for line in generate_latest(registry).splitlines() if b"_created" not in line)


def test_handles_match_the_public_api() -> None:
    expected = _exposition(hot=False)
    assert b'h_bucket{a="x",le="0.001"} 3.0' in expected  # 0.0001, 0.0 and 0.001 itself
    assert _exposition(hot=True) == expected


def test_handles_match_the_public_api_in_multiprocess_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = []
    for hot in (False, True):
        directory = tmp_path / str(hot)
        directory.mkdir()
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
        # The value class is chosen when prometheus_client.values is loaded: reload it for the mmap files.
        importlib.reload(values)
        _fill(CollectorRegistry(), hot)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(directory))
        outputs.append(generate_latest(registry))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    importlib.reload(values)
    assert outputs[0] == outputs[1]
    assert b'h_count{a="x"} 9.0' in outputs[1]
