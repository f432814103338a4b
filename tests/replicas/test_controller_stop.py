"""A graceful stop must end the controller loop and hand the lease over, even when the
cancel is swallowed on the way.

Found by the replica tests: on Python 3.11, asyncio.wait_for returns normally instead of
raising when the task waiting in it is cancelled just as its inner future finishes, and
redis-py wraps every socket write in asyncio.wait_for. About one graceful stop in twenty
then left the controller looping and renewing its lease, and the process hanging in
shutdown until killed. Here one swallowed cancel is reproduced on purpose.
"""

from __future__ import annotations

import asyncio

from migration.controller import LEASE, Controller
from migration.live import LiveMigrations
from migration.service import MigrationService
from migration.sync import StoreSync
from store.memory import MemoryStore
from telemetry.metrics import Metrics


class SwallowingSync(StoreSync):
    """Its second sync waits on `gate`, and the first cancel arriving meanwhile is swallowed."""

    def __init__(self, store: MemoryStore, live: LiveMigrations, metrics: Metrics) -> None:
        super().__init__(store, live, metrics.migration, "replica-a")
        self.syncs = 0
        self.waiting = asyncio.Event()
        self.gate = asyncio.Event()

    async def sync(self) -> bool:
        self.syncs += 1
        if self.syncs == 2:
            self.waiting.set()
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                pass  # what asyncio.wait_for does on 3.11 when its inner future finished meanwhile
        return await super().sync()


def _controller_loops() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "Controller.run_forever"]


async def test_stop_ends_the_loop_and_releases_the_lease_when_a_cancel_is_swallowed() -> None:
    store, metrics = MemoryStore(), Metrics()
    live = LiveMigrations(metrics.migration)
    runtime = SwallowingSync(store, live, metrics)
    service = MigrationService(store, live, runtime, metrics.migration, lambda: {}, lambda: {})
    controller = Controller(service, live, runtime, metrics.migration, sync_interval_s=0.05, lease_ttl_s=30)
    controller.start()
    await asyncio.wait_for(runtime.waiting.wait(), 5)
    assert controller.leader, "the first round should have taken the lease"

    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(controller.stop(), 3)
    assert loop.time() - began < 1, "stop() waited for a loop that ignored its cancel"
    assert _controller_loops() == [] or all(t.done() for t in _controller_loops())
    assert not controller.leader
    # Released, not left to expire 30 s from now: another replica can take it at once.
    assert await store.acquire_lease(LEASE, "replica-b", 30)
