"""Histogram buckets, chosen once for every metric that shares a scale."""

from __future__ import annotations

# Gateway-side latencies are sub-millisecond; upstream ones run to minutes.
OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.8, 1, 2.5, 5, 10, 30, 60, 120)

DELTA = (-5, -1, -0.5, -0.25, -0.1, -0.05, -0.01, 0, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 5)
COST_DELTA = (-0.01, -0.001, -0.0001, -0.00001, -0.000001, 0, 0.000001, 0.00001, 0.0001, 0.001, 0.01)

COUNT = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
RUN_COST = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5)
