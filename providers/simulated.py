"""A provider backed by the bundled simulator, started in-process on a loopback port.

The requests still cross a real socket, so the demo and the benchmark exercise
exactly the path a real OpenAI-compatible upstream takes. Every answer it gives
is labelled as simulated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers.base import UpstreamReply, UpstreamRequest
from providers.errors import ProviderError
from providers.openai_compat import OpenAICompatProvider, SSEStream
from simulator import SimulationSettings, SimulatorServer


class SimulatedProvider:
    def __init__(
        self, name: str, settings: SimulationSettings | None, *, headers: Mapping[str, str] | None = None,
        **client_options: Any,
    ) -> None:
        self.name = name
        self.server = SimulatorServer(settings or SimulationSettings())
        self._client_options = client_options
        self._headers = headers
        self._client: OpenAICompatProvider | None = None

    @property
    def ready(self) -> bool:
        return self._client is not None and self._client.ready

    async def start(self) -> None:
        if self._client is None:
            await self.server.start("127.0.0.1", 0)
            self._client = OpenAICompatProvider(
                self.name, self.server.base_url, None, headers=self._headers, **self._client_options
            )
            await self._client.start()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
            await self.server.stop()

    def _started(self) -> OpenAICompatProvider:
        if self._client is None:
            raise ProviderError(f"provider '{self.name}' is not started")
        return self._client

    async def send(self, request: UpstreamRequest) -> UpstreamReply:
        return await self._started().send(request)

    async def open_stream(self, request: UpstreamRequest) -> SSEStream:
        return await self._started().open_stream(request)
