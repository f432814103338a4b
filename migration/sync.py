"""This replica and the store: push its windows, pull states and kill switches (I/O; the clock is injected).

Every `sync` (a background loop, `controller.sync_interval_s`): each migration's
local window of the current step is written to the store under this replica's
name, and migration states and kill switches are read back into the live
migrations. That loop is how a rollback decided anywhere reaches every replica,
and why a store outage leaves a replica serving with the last state it saw.
`pooled_window` merges every replica's window of a step: the controller's view.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from config.migration import MigrationSpec
from migration.blocks import Block, current_block
from migration.live import LiveMigrations
from migration.rollout import MigrationState
from migration.window import StepWindow, merge_steps
from store.base import Store, StoreUnavailable
from telemetry.migration_metrics import MigrationMetrics

_log = logging.getLogger("cutover.migration")


def step_key(started_at: float) -> str:
    return repr(started_at)


class StoreSync:
    def __init__(
        self, store: Store, live: LiveMigrations, metrics: MigrationMetrics, replica: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.replica = replica
        self._live = live
        self._metrics = metrics
        self._clock = clock
        self.store_ok = True
        self.last_sync_at: float | None = None

    async def sync(self) -> bool:
        """Push this replica's windows, pull states and kill switches. False when the store is down."""
        try:
            for migration_id, window in self._live.fold_all().items():
                await self.store.put_window(migration_id, step_key(window.started_at), self.replica, window.to_dict())
            stored = await self.store.list_migrations()
            kills = await self.store.kill_switches()
        except StoreUnavailable as exc:
            if self.store_ok:
                _log.warning("store unreachable; serving with the last known migration state",
                             extra={"fields": {"error": str(exc)}})
            self.store_ok = False
            self._metrics.store_up.set(0)
            return False
        for item in stored:
            try:
                self._live.apply(MigrationSpec.model_validate(item.spec), MigrationState.from_dict(item.state))
            except ValueError as exc:
                _log.error("unreadable migration in store", extra={"fields": {"id": item.id, "error": str(exc)}})
        self._live.set_kill_switches(kills)
        self._live.mark_synced()
        if not self.store_ok:
            _log.warning("store reachable again")
        self.store_ok = True
        self._metrics.store_up.set(1)
        self.last_sync_at = self._clock()
        return True

    async def recent_block(self, migration_id: str, window: StepWindow, now: float, length_s: float) -> Block:
        """The step's current recent block (migration.blocks), carried on in the store from tick to tick."""
        key = step_key(window.started_at) + "/block"
        stored = await self.store.windows(migration_id, key)
        try:
            block = Block.from_dict(stored[0]) if stored else None
        except (KeyError, ValueError) as exc:
            _log.error("unreadable block in store", extra={"fields": {"id": migration_id, "error": str(exc)}})
            block = None
        current = current_block(block, window, now, length_s)
        if current != block:
            await self.store.put_window(migration_id, key, "controller", current.to_dict())
        return current

    async def pooled_window(self, migration_id: str) -> StepWindow | None:
        """Every replica's window of the current step, merged (the controller's view)."""
        started = self._live.step_started_at(migration_id)
        if started is None:
            return None
        window = StepWindow(started)
        for data in await self.store.windows(migration_id, step_key(started)):
            try:
                window = merge_steps(window, StepWindow.from_dict(data))
            except ValueError as exc:
                _log.error("unreadable window in store", extra={"fields": {"id": migration_id, "error": str(exc)}})
        return window
