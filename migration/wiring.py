"""Build the migration machinery for one gateway process from the config."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from config.migration import MigrationSpec
from config.schema import GatewayConfig, StoreConfig
from metering.pricing import PriceBook
from metering.tokens import TokenCounter
from migration.controller import Controller
from migration.runtime import MigrationRuntime
from migration.service import MigrationService
from migration.shadow import ShadowRunner
from providers.base import Provider
from store.base import Store, StoreUnavailable
from store.memory import MemoryStore
from store.redis_store import RedisStore
from store.sqlite import SQLiteStore
from telemetry.metrics import Metrics

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
    store: Store
    runtime: MigrationRuntime
    shadow: ShadowRunner
    service: MigrationService
    controller: Controller
    declared: list[MigrationSpec]
    _pending: list[MigrationSpec] = field(default_factory=list)

    async def start(self) -> None:
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
        await self.runtime.sync()  # the last outcomes of this replica are not lost
        await self.store.close()


def build_migrations(
    config: GatewayConfig,
    providers: Mapping[str, Provider],
    prices: PriceBook,
    tokens: TokenCounter,
    metrics: Metrics,
    store: Store | None = None,
) -> Migrations:
    store = store or build_store(config.store)
    runtime = MigrationRuntime(store, metrics, replica_name())
    shadow = ShadowRunner(providers, runtime, prices, tokens, metrics)
    service = MigrationService(
        store, runtime, metrics, lambda: config.models, lambda: config.providers, on_stop_shadow=shadow.cancel
    )
    controller = Controller(
        service, runtime, metrics, config.controller.sync_interval_s, config.controller.lease_ttl_s
    )
    migrations = Migrations(store, runtime, shadow, service, controller, list(config.migrations))
    controller.before_round = migrations.adopt_declared
    return migrations
