"""Fixtures: two simulated upstreams, a private Redis, and a factory of `cutover serve` processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator import BackgroundSimulator, SimulationSettings
from tests.replicas.harness import Cluster, Running, start_replicas, stop_all, write_config
from tests.store.redis_server import RedisServer, started_redis


def _sim() -> BackgroundSimulator:
    sim = BackgroundSimulator(SimulationSettings(output_tokens=4, record_limit=100_000))
    sim.start()
    return sim


@pytest.fixture
def sims() -> Iterator[tuple[BackgroundSimulator, BackgroundSimulator]]:
    """(baseline, candidate) upstreams; which one a request reached is in its records."""
    baseline, candidate = _sim(), _sim()
    yield baseline, candidate
    baseline.stop()
    candidate.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = started_redis(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = started_redis(tmp_path / "redis-aof", persistent=True)
    yield server
    server.stop()


@pytest.fixture
def cluster(tmp_path: Path, sims: tuple[BackgroundSimulator, BackgroundSimulator]) -> Iterator[Cluster]:
    """`cluster(count, store={...}, plan={...}, workers=1, env=None)`: processes on one shared config file."""
    started: list[Running] = []
    baseline, candidate = sims

    def factory(
        count: int, *, store: dict[str, Any], plan: dict[str, Any], workers: int = 1,
        env: dict[str, str] | None = None,
    ) -> Running:
        config = write_config(tmp_path / "cutover.yaml", baseline, candidate, store, plan)
        replicas = start_replicas(config, count, tmp_path, workers=workers, env=env)
        running = Running(replicas, baseline, candidate, config, tmp_path)
        started.append(running)
        return running

    yield factory
    for running in started:
        stop_all(running.replicas)
        # Shown by pytest only when the test failed: what each gateway logged.
        for replica in running.replicas:
            if log := replica.stderr().strip():
                print(f"--- {replica.name} stderr (tail) ---\n{log[-1500:]}")
