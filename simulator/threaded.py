"""Running the simulator on a private event loop in a daemon thread.

For synchronous callers (the sync ``openai`` client, benchmarks driving a
gateway in another process) that cannot host the server on their own loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import TypeVar

from simulator.app import SimulatorServer, preferred_loop_factory
from simulator.behaviour import SimulationSettings
from simulator.state import RecordedRequest

_T = TypeVar("_T")


class BackgroundSimulator:
    """``with BackgroundSimulator(settings) as sim: OpenAI(base_url=sim.base_url, ...)``.

    State is read and changed by hopping onto the server loop, so calls from
    the owning thread never race the handlers.
    """

    def __init__(self, settings: SimulationSettings | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._settings = settings
        self._host = host
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: SimulatorServer | None = None
        self._stop: asyncio.Event | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("simulator thread already started")
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="cutover-simulator", daemon=True)
        self._thread.start()
        ready.result(timeout=10)

    def _run(self, ready: Future[None]) -> None:
        factory = preferred_loop_factory()
        loop = factory() if factory is not None else asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready))
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
        finally:
            loop.close()

    async def _serve(self, ready: Future[None]) -> None:
        self._stop = asyncio.Event()
        server = SimulatorServer(self._settings)
        await server.start(self._host, self._port)
        self._server = server
        ready.set_result(None)
        try:
            await self._stop.wait()
        finally:
            await server.stop()

    def stop(self) -> None:
        loop, thread, stop = self._loop, self._thread, self._stop
        if loop is None or thread is None or stop is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> BackgroundSimulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def server(self) -> SimulatorServer:
        if self._server is None:
            raise RuntimeError("simulator thread not started")
        return self._server

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def call(self, func: Callable[[], _T]) -> _T:
        """Run ``func`` on the server loop and return its result."""
        if self._loop is None:
            raise RuntimeError("simulator thread not started")
        done: Future[_T] = Future()

        def invoke() -> None:
            try:
                done.set_result(func())
            except BaseException as exc:
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(invoke)
        return done.result(timeout=10)

    @property
    def settings(self) -> SimulationSettings:
        return self.call(lambda: self.server.settings)

    def set_settings(self, settings: SimulationSettings) -> None:
        self.call(lambda: self.server.set_settings(settings))

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.call(lambda: self.server.requests)

    def clear_requests(self) -> None:
        self.call(self.server.clear_requests)
