"""Every Prometheus metric the gateway exports, defined once, in one group per subsystem over one registry.

    requests   client requests (the edge's record stage)   telemetry.request_metrics
    upstream   upstream attempts (the dispatcher)           telemetry.upstream_metrics
    migration  migrations, shadow pairs, the store         telemetry.migration_metrics
    planner    plan-and-execute runs                       telemetry.planner_metrics

Each part of the gateway is handed only its group. Labels come from configuration
(alias, provider, upstream model), from a fixed set (status class, token kind,
stream), never from request text, so cardinality is bounded by the config. With
several workers, prometheus_client's multiprocess mode is used: set
PROMETHEUS_MULTIPROC_DIR before start-up (the CLI does) and /metrics aggregates
every worker's files.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from telemetry.migration_metrics import MigrationMetrics
from telemetry.planner_metrics import PlannerMetrics
from telemetry.request_metrics import RequestMetrics
from telemetry.upstream_metrics import UpstreamMetrics

UNKNOWN = "unknown"


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = RequestMetrics(self.registry)
        self.upstream = UpstreamMetrics(self.registry)
        self.migration = MigrationMetrics(self.registry)
        self.planner = PlannerMetrics(self.registry)

    def exposition(self) -> bytes:
        directory = multiprocess_dir()
        if directory:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=directory)
            return generate_latest(registry)
        return generate_latest(self.registry)


def status_class(status: int) -> str:
    return f"{status // 100}xx"
