"""Fixtures for the simulator tests: a real server on a loopback port."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest_asyncio

# The project is not necessarily pip-installed; make the repo root importable
# when pytest is launched through the venv's ``pytest`` script.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from simulator import SimulationSettings, SimulatorServer  # noqa: E402

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
