"""Build the providers named in the config, and start and stop them together."""

from __future__ import annotations

from collections.abc import Mapping

from config.schema import ProviderConfig
from providers.openai_compat import OpenAICompatProvider
from providers.simulated import SimulatedProvider

AnyProvider = OpenAICompatProvider | SimulatedProvider


def build_provider(name: str, config: ProviderConfig) -> AnyProvider:
    timeouts = config.timeouts
    common = {
        "connect_timeout": timeouts.connect,
        "read_timeout": timeouts.read,
        "total_timeout": timeouts.total,
        "pool_size": config.pool_size,
        "headers": config.headers,
    }
    if config.type == "simulated":
        return SimulatedProvider(name, config.simulation, **common)
    assert config.base_url is not None  # checked by the config loader
    api_key = config.api_key.get_secret_value() if config.api_key is not None else None
    return OpenAICompatProvider(name, config.base_url, api_key, **common)


class ProviderRegistry:
    def __init__(self, configs: Mapping[str, ProviderConfig]) -> None:
        self.providers: dict[str, AnyProvider] = {name: build_provider(name, c) for name, c in configs.items()}

    async def start(self) -> None:
        for provider in self.providers.values():
            await provider.start()

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.close()

    def ready(self) -> dict[str, bool]:
        return {name: provider.ready for name, provider in self.providers.items()}
