"""Build the providers named in the config, and start and stop them together."""

from __future__ import annotations

from collections.abc import Mapping

from config.schema import ProviderConfig
from providers.base import Provider
from providers.openai_compat import OpenAICompatProvider
from providers.simulated import SimulatedProvider

AnyProvider = OpenAICompatProvider | SimulatedProvider
_CHAT_ONLY = frozenset({"chat"})


def build_provider(name: str, config: ProviderConfig) -> AnyProvider:
    timeouts = config.timeouts
    if config.type == "simulated":
        return SimulatedProvider(
            name, config.simulation, connect_timeout=timeouts.connect, read_timeout=timeouts.read,
            total_timeout=timeouts.total, pool_size=config.pool_size, headers=config.headers,
        )
    assert config.base_url is not None  # checked by the config loader
    api_key = config.api_key.get_secret_value() if config.api_key is not None else None
    return OpenAICompatProvider(
        name, config.base_url, api_key, connect_timeout=timeouts.connect, read_timeout=timeouts.read,
        total_timeout=timeouts.total, pool_size=config.pool_size, headers=config.headers,
    )


class ProviderRegistry:
    """The configured upstreams, and whatever else serves targets (the meta-models add themselves)."""

    def __init__(self, configs: Mapping[str, ProviderConfig]) -> None:
        self.providers: dict[str, Provider] = {name: build_provider(name, c) for name, c in configs.items()}
        self._dialects = {name: c.native_dialects() for name, c in configs.items()}

    def speaks(self, provider: str, dialect: str) -> bool:
        """Whether the provider's upstream serves `dialect` itself (those added later, chat only)."""
        return dialect in self._dialects.get(provider, _CHAT_ONLY)

    async def start(self) -> None:
        for provider in self.providers.values():
            await provider.start()

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.close()

    def ready(self) -> dict[str, bool]:
        return {name: provider.ready for name, provider in self.providers.items()}
