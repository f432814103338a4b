"""Build the migration machinery for one gateway process from the config."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from config.migration import MigrationSpec, QualityGates
from config.schema import GatewayConfig, StoreConfig
from metering.ceiling import RateCeiling
from metering.meter import Meter
from migration.accounting import ArmAccounting
from migration.answers import AnswerFetcher
from migration.capture import Capture
from migration.controller import Controller
from migration.judge import JudgeRunner
from migration.live import LiveMigrations
from migration.replay import Replayer
from migration.service import MigrationService
from migration.shadow import ShadowRunner
from migration.sync import StoreSync
from providers.dispatch import Dispatcher
from store.base import Store, StoreUnavailable
from store.memory import MemoryStore
from store.redis_store import RedisStore
from store.sqlite import SQLiteStore
from telemetry.migration_metrics import MigrationMetrics

_log = logging.getLogger("cutover.migration")


def build_store(config: StoreConfig) -> Store:
    if config.backend == "redis":
        assert config.url is not None  # checked by the config loader
        return RedisStore(config.url, prefix=config.prefix, timeout_s=config.timeout_s)
    if config.backend == "memory":
        return MemoryStore()
    return SQLiteStore(config.path)


def replica_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class Migrations:
    """The migration machinery of one gateway process: what the request path uses (`live` to decide arms,
    `shadow` to copy, `accounting` to count), what operators use (`service`), and the background loop."""

    store: Store
    live: LiveMigrations
    sync: StoreSync
    shadow: ShadowRunner
    accounting: ArmAccounting
    service: MigrationService
    controller: Controller
    declared: list[MigrationSpec]
    capture: Capture
    replayer: Replayer
    # Binds its calls once the app exists (gateway.app): they go through the gateway's own path.
    judge: JudgeRunner | None = None
    _pending: list[MigrationSpec] = field(default_factory=list)

    async def start(self) -> None:
        # Read every migration's state before the first request is served (the server awaits this): a
        # restarted process must not route a sticky user by a state it has not read yet.
        await self.sync.sync()
        self._pending = list(self.declared)
        await self.adopt_declared()
        self.controller.start()

    async def adopt_declared(self) -> None:
        """Create or resume the migrations the config declares; retried while the store is down."""
        still: list[MigrationSpec] = []
        for spec in self._pending:
            try:
                await self.service.ensure_from_config(spec)
            except StoreUnavailable as exc:
                _log.warning("store unreachable at start-up; will retry", extra={"fields": {"error": str(exc)}})
                still.append(spec)
        self._pending = still

    async def stop(self) -> None:
        await self.controller.stop()
        await self.shadow.cancel_all()
        await self.capture.settle()
        await self.sync.sync()  # the last samples of this replica are not lost
        await self.store.close()


def build_migrations(
    config: GatewayConfig,
    dispatcher: Dispatcher,
    meter: Meter,
    metrics: MigrationMetrics,
    store: Store | None = None,
) -> Migrations:
    store = store or build_store(config.store)
    live = LiveMigrations(metrics)
    sync = StoreSync(store, live, metrics, replica_name())

    def targets(alias: str) -> list[tuple[str, str]]:
        configured = config.models[alias].targets if alias in config.models else []
        return [(t.provider, t.model) for t in configured] + live.arms_of(alias)

    async def keep_example(migration_id: str, settings: QualityGates, example: dict[str, Any]) -> None:
        await store.add_sample("example", migration_id, orjson.dumps(example), settings.examples_retention_s,
                               settings.max_examples)

    judge = JudgeRunner(
        metrics, lambda decision, counts: live.record_quality(decision, "candidate", counts),
        RateCeiling(meter.prices, targets).worst_case,
        judge_allowed=lambda alias: alias not in config.models or config.models[alias].judge,
        keep_example=keep_example,
    )
    shadow = ShadowRunner(dispatcher, meter, live, metrics, judge)
    capture = Capture(store, {alias: route.capture for alias, route in config.models.items()
                              if route.capture is not None}, metrics)
    replayer = Replayer(AnswerFetcher(dispatcher, meter), capture, judge, metrics)
    service = MigrationService(
        store, live, sync, metrics, lambda: config.models, lambda: config.providers, on_stop_shadow=shadow.cancel
    )
    controller = Controller(
        service, live, sync, metrics, config.controller.sync_interval_s, config.controller.lease_ttl_s
    )
    migrations = Migrations(
        store, live, sync, shadow, ArmAccounting(live, metrics), service, controller, list(config.migrations),
        capture, replayer, judge,
    )
    controller.before_round = migrations.adopt_declared
    return migrations
