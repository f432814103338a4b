"""Build the configured meta-models and plug them into the gateway as providers and routes."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from decimal import Decimal
from typing import Any

from config.schema import GatewayConfig
from metering.ceiling import RateCeiling
from metering.pricing import PriceBook
from metering.usage import Usage
from planner.internal import InternalCaller
from planner.mcp import McpServers
from planner.meta_model import MetaModel
from planner.runs import Runs
from store.base import Store
from telemetry.planner_metrics import PlannerMetrics

ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]
INTERNAL_KEY_NAME = "internal"


def provider_name(meta_model: str) -> str:
    return f"meta:{meta_model}"


def is_meta_provider(provider: str) -> bool:
    return provider.startswith("meta:")


class MetaModels:
    def __init__(
        self, config: GatewayConfig, prices: PriceBook, metrics: PlannerMetrics, replica: str,
        store: Store | None = None,
    ) -> None:
        self._config = config
        self._prices = prices
        # Internal calls authenticate with a key that exists only in this process's memory.
        self.internal_key = secrets.token_urlsafe(32)
        redis = None
        if config.meta_models and config.store.backend == "redis" and config.store.url:
            import redis.asyncio as aioredis

            redis = aioredis.Redis.from_url(config.store.url, socket_timeout=config.store.timeout_s)
        self._redis = redis
        self.runs = Runs(replica, redis)
        used = {server for meta in config.meta_models.values() for server in meta.mcp_servers}
        # One client per MCP server, shared by every meta-model that lists it (its concurrency bound is per server).
        self.servers = McpServers({n: s for n, s in config.mcp_servers.items() if n in used}) if used else None
        self.models: dict[str, MetaModel] = {}
        for name, meta in config.meta_models.items():
            planner = config.models[meta.planner].targets[0]

            def equivalent(usage: dict[str, int], provider: str = planner.provider, model: str = planner.model) -> (
                Decimal
            ):
                return prices.cost(provider, model, Usage(usage["prompt_tokens"], usage["completion_tokens"]))

            self.models[name] = MetaModel(name, meta, metrics, self.runs, equivalent, store, self.servers)

    def providers(self) -> dict[str, MetaModel]:
        return {provider_name(name): model for name, model in self.models.items()}

    def bind(self, app: ASGIApp, migration_arms: Callable[[str], Iterable[tuple[str, str]]]) -> None:
        """Calls go through `app`; a call is priced at the dearest of its alias's targets and migration arms."""
        models = self._config.models

        def targets(alias: str) -> list[tuple[str, str]]:
            configured = models[alias].targets if alias in models else []
            return [(t.provider, t.model) for t in configured] + list(migration_arms(alias))

        ceiling = RateCeiling(self._prices, targets)
        for name, model in self.models.items():
            model.bind(InternalCaller(app, self.internal_key, name), ceiling)

    async def close(self) -> None:
        if self.servers is not None:
            await self.servers.close()
        if self._redis is not None:
            await self._redis.aclose()
