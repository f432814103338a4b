"""Fixtures: simulated upstreams and gateways on loopback ports, stopped after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from config.schema import GatewayConfig
from simulator import BackgroundSimulator, SimulationSettings
from tests.support import BackgroundGateway, gateway_config

SimFactory = Callable[..., BackgroundSimulator]
GatewayFactory = Callable[..., BackgroundGateway]


@pytest.fixture
def make_sim() -> Iterator[SimFactory]:
    started: list[BackgroundSimulator] = []

    def factory(**settings: Any) -> BackgroundSimulator:
        sim = BackgroundSimulator(SimulationSettings(**settings))
        sim.start()
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim: SimFactory) -> BackgroundSimulator:
    return make_sim()


@pytest.fixture
def make_gateway() -> Iterator[GatewayFactory]:
    """`make_gateway(providers, models, **gateway_config_kwargs)` or `make_gateway(config=...)`."""
    started: list[BackgroundGateway] = []

    def factory(
        providers: dict[str, Any] | None = None,
        models: dict[str, Any] | None = None,
        *,
        config: GatewayConfig | None = None,
        **kwargs: Any,
    ) -> BackgroundGateway:
        if config is None:
            assert providers is not None and models is not None
            config = gateway_config(providers, models, **kwargs)
        gw = BackgroundGateway(config).start()
        started.append(gw)
        return gw

    yield factory
    for gw in reversed(started):
        gw.stop()
