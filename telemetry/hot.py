"""Update handles for labelled metric children on the request path.

prometheus_client's `Counter.inc` and `Histogram.observe` check, on every call,
that the child is observable, and `observe` walks the bucket bounds in Python.
A proxied request updates about a dozen series, and those checks cost about as
much as the rest of the gateway's per-request bookkeeping (bench/README.md).
These handles bind a child's value objects once, then update them directly:
the same values prometheus_client exposes, in one process or in multiprocess
mode (where the values are its mmap-backed files). tests/telemetry checks that
every handle leaves the registry exactly as the public API would.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram


class HotCounter:
    __slots__ = ("inc",)

    def __init__(self, child: Counter) -> None:
        self.inc: Callable[[float], None] = child._value.inc


class HotGauge:
    __slots__ = ("_inc",)

    def __init__(self, child: Gauge) -> None:
        self._inc: Callable[[float], None] = child._value.inc

    def inc(self) -> None:
        self._inc(1)

    def dec(self) -> None:
        self._inc(-1)


class HotHistogram:
    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, child: Histogram) -> None:
        self._bounds: list[float] = list(child._upper_bounds)
        self._sum: Callable[[float], None] = child._sum.inc
        self._buckets: list[Callable[[float], None]] = [bucket.inc for bucket in child._buckets]

    def observe(self, amount: float) -> None:
        self._sum(amount)
        # The first bound >= amount, as prometheus_client picks it; the last bound is +Inf.
        if amount == amount:  # NaN falls in no bucket there either
            self._buckets[bisect_left(self._bounds, amount)](1)


class HotHistograms:
    """Hot handles per labelled child, cached: `labels()` costs more than the update."""

    __slots__ = ("_children",)

    def __init__(self) -> None:
        self._children: dict[tuple[Histogram, tuple[str, ...]], HotHistogram] = {}

    def child(self, histogram: Histogram, *labels: str) -> HotHistogram:
        key = (histogram, labels)
        hot = self._children.get(key)
        if hot is None:
            hot = self._children[key] = HotHistogram(histogram.labels(*labels))
        return hot
