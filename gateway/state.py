"""Everything a request needs, built once from the config and passed explicitly."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from config.schema import GatewayConfig
from gateway.auth import KeyRing
from gateway.dispatch import Dispatcher
from metering.pricing import PriceBook
from metering.tokens import TokenCounter
from migration.wiring import Migrations, build_migrations
from planner.wiring import INTERNAL_KEY_NAME, MetaModels, provider_name
from providers.registry import ProviderRegistry
from routing.breaker import CircuitBreakers
from routing.table import RouteTable
from store.base import Store
from telemetry.logs import access_logger
from telemetry.metrics import Metrics


@dataclass
class GatewayState:
    config: GatewayConfig
    routes: RouteTable
    registry: ProviderRegistry
    breakers: CircuitBreakers
    prices: PriceBook
    tokens: TokenCounter
    keys: KeyRing
    admin_keys: KeyRing
    metrics: Metrics
    dispatcher: Dispatcher
    log: logging.Logger
    migration: Migrations
    metas: MetaModels
    started_at: int = field(default_factory=lambda: int(time.time()))
    ready: bool = False

    @classmethod
    def build(cls, config: GatewayConfig, metrics: Metrics | None = None, store: Store | None = None) -> GatewayState:
        metrics = metrics or Metrics()
        prices = PriceBook(config.prices)
        tokens = TokenCounter()
        registry = ProviderRegistry(config.providers)
        migration = build_migrations(config, registry.providers, prices, tokens, metrics, store)
        metas = MetaModels(config, prices, metrics, migration.runtime.replica)
        registry.providers.update(metas.providers())
        keys = KeyRing.from_config(config.auth)
        keys.add(INTERNAL_KEY_NAME, metas.internal_key)
        breakers = CircuitBreakers(
            config.routing.circuit_breaker.failure_threshold, config.routing.circuit_breaker.cooldown_s
        )
        return cls(
            config=config,
            routes=RouteTable(config.models, {name: provider_name(name) for name in config.meta_models}),
            registry=registry,
            breakers=breakers,
            prices=prices,
            tokens=tokens,
            keys=keys,
            admin_keys=KeyRing.of(config.admin.keys),
            metrics=metrics,
            dispatcher=Dispatcher(registry.providers, breakers, config.routing.retry, metrics),
            log=access_logger(),
            migration=migration,
            metas=metas,
        )
