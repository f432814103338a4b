"""Fixtures for the simulator tests: a real server on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest_asyncio

from simulator import SimulationSettings, SimulatorServer

SimFactory = Callable[..., Awaitable[SimulatorServer]]


@pytest_asyncio.fixture
async def make_sim() -> AsyncIterator[SimFactory]:
    started: list[SimulatorServer] = []

    async def factory(**settings: object) -> SimulatorServer:
        server = SimulatorServer(SimulationSettings.model_validate(settings))
        await server.start("127.0.0.1", 0)
        started.append(server)
        return server

    yield factory
    for server in started:
        await server.stop()


@pytest_asyncio.fixture
async def sim(make_sim: SimFactory) -> SimulatorServer:
    return await make_sim()
