"""Assembling and running the cutover simulator (a fake OpenAI-compatible upstream)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Final

from aiohttp import web

from simulator import control, handlers, legacy, responses
from simulator.behaviour import SimulationSettings
from simulator.state import STATE_KEY, RecordedRequest, SimulatorState

SIMULATOR_HEADER: Final = "x-cutover-simulator"
_WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "::"})


async def _mark_simulated(request: web.BaseRequest, response: web.StreamResponse) -> None:
    # Lets anyone inspecting traffic tell simulated answers from real ones.
    response.headers[SIMULATOR_HEADER] = "true"


async def _on_startup(app: web.Application) -> None:
    # A fresh event per run keeps the app restartable on another loop.
    app[STATE_KEY].stopping = asyncio.Event()


async def _on_shutdown(app: web.Application) -> None:
    app[STATE_KEY].stopping.set()


MAX_REQUEST_BYTES = 64 * 1024 * 1024


def create_sim_app(settings: SimulationSettings | None = None) -> web.Application:
    """Build the aiohttp application; its state is reachable as ``app[STATE_KEY]``."""
    # aiohttp's default 1 MB cap would refuse prompts a gateway forwards (agents send several MB).
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[STATE_KEY] = SimulatorState(settings or SimulationSettings())
    app.on_response_prepare.append(_mark_simulated)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.router.add_post("/v1/chat/completions", handlers.chat_completions)
    app.router.add_post("/v1/embeddings", handlers.embeddings)
    app.router.add_post("/v1/completions", legacy.completions)
    app.router.add_post("/v1/responses", responses.responses)
    app.router.add_get("/v1/models", handlers.list_models)
    app.router.add_get("/_sim/requests", control.get_requests)
    app.router.add_delete("/_sim/requests", control.clear_requests)
    app.router.add_get("/_sim/behaviour", control.get_behaviour)
    app.router.add_put("/_sim/behaviour", control.put_behaviour)
    app.router.add_patch("/_sim/behaviour", control.patch_behaviour)
    return app


class SimulatorServer:
    """The simulator bound to a real socket, embeddable in any running asyncio loop.

    All methods and attributes must be used from the loop that called
    :meth:`start` (use ``BackgroundSimulator`` from synchronous code).
    """

    def __init__(self, settings: SimulationSettings | None = None, *, shutdown_timeout: float = 1.0) -> None:
        self.app = create_sim_app(settings)
        self.state: SimulatorState = self.app[STATE_KEY]
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._host = "127.0.0.1"
        self._port: int | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        runner = web.AppRunner(
            self.app,
            access_log=None,
            # Frees handlers whose client gave up (e.g. on a hang) instead of
            # letting them run to completion.
            handler_cancellation=True,
            shutdown_timeout=self._shutdown_timeout,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._host = host
        self._port = runner.addresses[0][1]

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> SimulatorServer:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("simulator not started")
        return self._port

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self._host in _WILDCARD_HOSTS else self._host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"

    @property
    def settings(self) -> SimulationSettings:
        return self.state.settings

    @settings.setter
    def settings(self, settings: SimulationSettings) -> None:
        self.set_settings(settings)

    def set_settings(self, settings: SimulationSettings) -> None:
        """Same as ``PUT /_sim/behaviour``: replace behaviour and restart the script."""
        self.state.replace_settings(settings)

    @property
    def requests(self) -> list[RecordedRequest]:
        return list(self.state.records)

    def clear_requests(self) -> None:
        self.state.records.clear()


def preferred_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_simulator(host: str = "127.0.0.1", port: int = 8100, settings: SimulationSettings | None = None) -> None:
    """Blocking CLI entry point; returns after SIGINT or SIGTERM."""
    with asyncio.Runner(loop_factory=preferred_loop_factory()) as runner:
        runner.run(_serve_until_signalled(host, port, settings))


async def _serve_until_signalled(host: str, port: int, settings: SimulationSettings | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not available on every platform; Ctrl-C then falls back to KeyboardInterrupt.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    server = SimulatorServer(settings)
    await server.start(host, port)
    print(
        f"cutover simulator (simulated OpenAI-compatible upstream, not a real model) listening on {server.base_url}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await server.stop()
        print("cutover simulator stopped", file=sys.stderr, flush=True)
