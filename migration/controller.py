"""The background loop of every gateway process.

Every `sync_interval_s`: sync this replica with the store (push outcome windows,
pull states and kill switches). Then, in the one process holding the controller
lease, run the analysis of each running migration once per its `interval_s`. If
the leader dies its lease expires after `lease_ttl_s` and another process takes
over. While the store is unreachable nothing is analysed or advanced: replicas
keep serving with the state they last saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from migration.live import LiveMigrations
from migration.rollout import expects_tick
from migration.service import MigrationError, MigrationService
from migration.sync import StoreSync
from store.base import StoreUnavailable
from telemetry.migration_metrics import MigrationMetrics

LEASE = "controller"
_log = logging.getLogger("cutover.migration")


class Controller:
    def __init__(
        self,
        service: MigrationService,
        live: LiveMigrations,
        sync: StoreSync,
        metrics: MigrationMetrics,
        sync_interval_s: float,
        lease_ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._service = service
        self._live = live
        self._sync = sync
        self._metrics = metrics
        self._sync_interval = sync_interval_s
        self._lease_ttl = lease_ttl_s
        self._clock = clock
        self._last_tick: dict[tuple[str, float], float] = {}
        self.leader = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        # Work that waits for the store (declared migrations not yet adopted).
        self.before_round: Callable[[], Awaitable[None]] | None = None

    async def step(self) -> None:
        """One round: sync, then analyse what is due if this process leads."""
        if not await self._sync.sync():
            self._set_leader(False)
            return
        if self.before_round is not None:
            await self.before_round()
        try:
            leader = await self._sync.store.acquire_lease(LEASE, self._sync.replica, self._lease_ttl)
        except StoreUnavailable:
            leader = False
        self._set_leader(leader)
        if leader:
            await self._analyse_due()

    def _set_leader(self, leader: bool) -> None:
        if leader != self.leader:
            _log.info("controller lease " + ("taken" if leader else "lost"),
                      extra={"fields": {"replica": self._sync.replica}})
        self.leader = leader
        self._metrics.controller_leader.set(1 if leader else 0)

    async def _analyse_due(self) -> None:
        now = self._clock()
        for migration_id, (spec, state) in self._live.migrations().items():
            if not expects_tick(state) or state.step_started_at is None:
                continue
            key = (migration_id, state.step_started_at)
            last = self._last_tick.get(key, state.step_started_at)
            if now - last < spec.plan.interval_s:
                continue
            self._last_tick[key] = now
            try:
                await self._service.tick(migration_id)
            except (MigrationError, StoreUnavailable) as exc:
                _log.warning("analysis tick failed", extra={"fields": {"id": migration_id, "error": str(exc)}})

    async def run_forever(self) -> None:
        while not self._stopping:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception("migration controller round failed")
            # A periodic loop, woken early when an operator's change should spread at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._sync_interval)
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.ensure_future(self.run_forever())

    async def stop(self) -> None:
        if self._task is not None:
            # On Python 3.11 a cancel can be swallowed by asyncio.wait_for (redis-py wraps every
            # socket write in one); the flag still ends the loop, at the latest after this round.
            self._stopping = True
            self._wake.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.leader:
            # Hand the analysis over now rather than after the lease expires.
            with contextlib.suppress(StoreUnavailable):
                await self._sync.store.release_lease(LEASE, self._sync.replica)
            self._set_leader(False)
