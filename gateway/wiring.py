"""Everything one gateway process is made of, built once from the config.

`Gateway.build` is the composition root: it makes each part and hands it exactly
the collaborators it uses. Only the app's lifecycle, its route table and tests
hold the `Gateway` itself; no stage of a request sees it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from config.schema import GatewayConfig
from gateway.auth import KeyRing
from gateway.conversations import Conversations
from gateway.dialects.base import InboundDialect
from gateway.pipeline import Pipeline
from gateway.record import Recorder
from metering.meter import Meter
from metering.pricing import PriceBook
from metering.tokens import TokenCounter
from metering.usage import UsageEstimator
from migration.wiring import Migrations, build_migrations
from planner.wiring import INTERNAL_KEY_NAME, MetaModels, provider_name
from providers.dispatch import Dispatcher
from providers.registry import ProviderRegistry
from routing.breaker import CircuitBreakers
from routing.context import ContextFitter
from routing.retry import RetryPolicy
from routing.table import RouteTable
from store.base import Store
from store.probe import WriteProbe
from telemetry.metrics import Metrics
from telemetry.request_log import STDERR, RequestLog, dropped_counter


@dataclass
class Gateway:
    config: GatewayConfig
    metrics: Metrics
    keys: KeyRing
    admin_keys: KeyRing
    routes: RouteTable
    registry: ProviderRegistry
    breakers: CircuitBreakers
    meter: Meter
    fitter: ContextFitter
    dispatcher: Dispatcher
    migrations: Migrations
    metas: MetaModels
    recorder: Recorder
    store_probe: WriteProbe
    conversations: Conversations
    request_log: RequestLog | None = None
    started_at: int = field(default_factory=lambda: int(time.time()))
    ready: bool = False

    @classmethod
    def build(cls, config: GatewayConfig, metrics: Metrics | None = None, store: Store | None = None) -> Gateway:
        metrics = metrics or Metrics()
        prices = PriceBook(config.prices)
        tokens = TokenCounter()
        meter = Meter(prices, UsageEstimator(tokens))
        registry = ProviderRegistry(config.providers)
        breakers = CircuitBreakers(
            config.routing.circuit_breaker.failure_threshold, config.routing.circuit_breaker.cooldown_s
        )
        dispatcher = Dispatcher(registry.providers, breakers, RetryPolicy(config.routing.retry), meter,
                                metrics.upstream)
        migrations = build_migrations(config, dispatcher, meter, metrics.migration, store)
        metas = MetaModels(config, prices, metrics.planner, migrations.sync.replica, migrations.store)
        registry.providers.update(metas.providers())
        keys = KeyRing.from_config(config.auth)
        keys.add(INTERNAL_KEY_NAME, metas.internal_key)
        log = RequestLog(STDERR, dropped=dropped_counter(metrics.registry),
                         interval_s=config.server.request_log_flush_s) if config.server.request_log else None
        return cls(
            config=config,
            metrics=metrics,
            keys=keys,
            admin_keys=KeyRing.of(config.admin.keys),
            routes=RouteTable(config.models, {name: provider_name(name) for name in config.meta_models}),
            registry=registry,
            breakers=breakers,
            meter=meter,
            fitter=ContextFitter(prices.context_window, tokens),
            dispatcher=dispatcher,
            migrations=migrations,
            metas=metas,
            recorder=Recorder(metrics.requests, log, migrations.accounting),
            store_probe=WriteProbe(migrations.store),
            conversations=Conversations(migrations.store, config.responses.retention_s,
                                        config.responses.max_stored_bytes),
            request_log=log,
        )

    def pipeline(self, dialect: InboundDialect) -> Pipeline:
        return Pipeline(
            dialect,
            keys=self.keys,
            max_body_bytes=self.config.server.max_body_bytes,
            routes=self.routes,
            migrations=self.migrations.live,
            # A request arriving before the first read of the migration state waits this long for it.
            state_wait_s=2 * self.config.controller.sync_interval_s + self.config.store.timeout_s,
            shadow=self.migrations.shadow,
            capture=self.migrations.capture,
            fitter=self.fitter,
            speaks=self.registry.speaks,
            conversations=self.conversations,
            dispatcher=self.dispatcher,
            meter=self.meter,
            recorder=self.recorder,
            metrics=self.metrics.requests,
        )

    async def start(self) -> None:
        await self.registry.start()
        await self.migrations.start()
        await self.store_probe.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        try:
            await self.store_probe.stop()
            await self.migrations.stop()
            await self.registry.close()
            await self.metas.close()
        finally:
            # Last, so the lines of whatever finished during the stop are written too.
            if self.request_log is not None:
                await self.request_log.aclose()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        pools = self.registry.ready()
        if not self.ready or not all(pools.values()):
            return False, {"providers": pools}
        probe = self.store_probe.last
        if probe is not None and probe.state == "not_writable":
            # Unlike an outage this does not pass by itself, and no migration can move meanwhile.
            return False, {"providers": pools, "store": f"not writable ({probe.error})"}
        store_ok = self.migrations.sync.store_ok
        # A store outage is reported, not fatal: replicas keep serving with the last state they saw.
        return True, {
            "status": "ready" if store_ok else "degraded",
            "providers": pools,
            "cooling": self.breakers.cooling(),
            "store": "ok" if store_ok else "unreachable",
            "controller_leader": self.migrations.controller.leader,
        }
