"""Harness for tests that need a real gateway on a loopback port, and the test suite's shared helpers.

`BackgroundGateway` runs uvicorn with `create_app(config)` on its own event loop
in a daemon thread, so the synchronous `openai` SDK can call it over a real
socket. `gateway_config` builds a validated config from a few arguments.

`wait_for` is the one way a test waits for something to happen, and `ServerProcess`
the one way it runs a server as a subprocess (`cutover serve`, Prometheus, Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import uvicorn

from config.loader import parse_config
from config.schema import GatewayConfig
from gateway.app import CutoverApp, create_app
from gateway.connection import ConnectionLimits, protocol_factory
from providers.errors import UpstreamStatusError

CLIENT_KEY = "sk-test-client"
ROOT = Path(__file__).resolve().parents[1]

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], *, timeout: float, what: str, every: float = 0.02) -> T:
    """Poll `predicate` until it returns something truthy and return that; AssertionError naming `what`
    at the deadline. `every` is the sampling period of the observation: a predicate that costs the
    system under test real work (a Prometheus query, a scrape of a busy server) is sampled less often.
    A caller that needs the moment it first held takes time.monotonic() right after this returns."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def cutover_command() -> list[str]:
    """How to run the `cutover` CLI of this checkout as a subprocess."""
    script = Path(sys.executable).parent / "cutover"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]


@dataclass
class ServerProcess:
    """A server a test started as a subprocess (`cutover serve`, Prometheus, Redis...), its output in `log`."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @classmethod
    def start(
        cls,
        name: str,
        command: Sequence[str],
        *,
        port: int,
        log: Path,
        cwd: Path = ROOT,
        env: Mapping[str, str] | None = None,
        with_stdout: bool = False,
    ) -> Self:
        """Start `command`, its stderr (and its stdout if `with_stdout`, else nowhere) appended to `log`.

        Appended, so a server started again on the same log (Redis after a kill) keeps the first one's tail."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(command), cwd=cwd, env=None if env is None else dict(env),
                stdout=out if with_stdout else subprocess.DEVNULL, stderr=subprocess.STDOUT if with_stdout else out,
            )
        return cls(name, proc, port, log)

    @classmethod
    def cutover_serve(
        cls, name: str, config: Path, *, log: Path, args: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> Self:
        """`cutover serve --config <config> --port <a free port> <args> --quiet`; `env` is added to this
        process's environment, from which PROMETHEUS_MULTIPROC_DIR is removed: the CLI sets up its own
        for its workers unless the test asks for a directory it can look inside."""
        port = free_port()
        environment = dict(os.environ)
        environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
        environment.update(env or {})
        command = [*cutover_command(), "serve", "--config", str(config), "--port", str(port), *args, "--quiet"]
        return cls.start(name, command, port=port, log=log, env=environment)

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        """AssertionError with the tail of its log once the process has exited: waiting on it is pointless."""
        if not self.alive():
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.stderr()}")

    def answers(self, path: str, client: httpx.Client | None = None) -> bool:
        """Whether GET `path` answers 200 now; an AssertionError with its output once the process has exited."""
        self.check_alive()
        try:
            get = client.get if client is not None else httpx.get
            return get(f"{self.root_url}{path}", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, probe: Callable[[], bool], *, timeout: float, what: str, every: float = 0.02) -> None:
        """Poll `probe` until it holds; fails at once, with the log, if the process exits meanwhile."""

        def ready() -> bool:
            self.check_alive()
            return probe()

        wait_for(ready, timeout=timeout, what=f"{self.name} to {what}", every=every)

    def wait_answers(
        self, path: str, *, timeout: float, client: httpx.Client | None = None, every: float = 0.02
    ) -> None:
        """Wait until GET `path` answers 200."""
        self.wait_ready(lambda: self.answers(path, client), timeout=timeout, what=f"answer {path}", every=every)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, and SIGKILL if it has not exited within `grace_s`."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown, no last write, nothing released."""
        self.proc.kill()
        self.proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def unaccepting_port() -> Iterator[int]:
    """A port that listens but never accepts: its one-place queue is filled, so a further connect
    hangs until its own timeout (a target that is up but overwhelmed), where a closed port refuses."""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(socket.socket())
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port: int = server.getsockname()[1]
        for _ in range(4):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        yield port


def gateway_config(
    providers: dict[str, dict[str, Any]],
    models: dict[str, Any],
    *,
    prices: dict[str, Any] | None = None,
    routing: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
    auth_none: bool = False,
    extra: dict[str, Any] | None = None,
) -> GatewayConfig:
    """`providers` values are provider dicts; a bare base URL string means an OpenAI-compatible one."""
    raw: dict[str, Any] = {
        "server": {"request_log": False, **(server or {})},
        "auth": {"mode": "none"} if auth_none else {"keys": [{"name": "test", "key_env": "CUTOVER_TEST_KEY"}]},
        "providers": {
            name: ({"type": "openai", "base_url": spec} if isinstance(spec, str) else spec)
            for name, spec in providers.items()
        },
        "models": models,
        "prices": prices or {},
        "routing": routing
        or {"retry": {"initial_backoff_s": 0.01, "max_backoff_s": 0.05, "jitter_s": 0.0}},
        "store": {"backend": "memory"},
        **(extra or {}),
    }
    return parse_config(raw, env={"CUTOVER_TEST_KEY": CLIENT_KEY})


class BackgroundGateway:
    def __init__(self, config: GatewayConfig, *, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.port = 0
        self.app: CutoverApp | None = None
        self._env = env
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BackgroundGateway:
        if self._env:
            os.environ.update(self._env)
        self.app = create_app(self.config)
        self.port = free_port()
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, lifespan="on", log_level="warning",
            access_log=False, loop="asyncio", http=protocol_factory(ConnectionLimits.of(self.config.server)),
        )
        self._server = uvicorn.Server(config)
        ready: Future[None] = Future()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(ready))
            except BaseException as exc:
                if not ready.done():
                    ready.set_exception(exc)
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="cutover-gateway", daemon=True)
        self._thread.start()
        ready.result(timeout=15)
        return self

    async def _serve(self, ready: Future[None]) -> None:
        assert self._server is not None
        task = asyncio.ensure_future(self._server.serve())
        while not self._server.started:
            if task.done():
                task.result()
                raise RuntimeError("gateway stopped during start-up")
            await asyncio.sleep(0.01)
        ready.set_result(None)
        await task

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)

    def __enter__(self) -> BackgroundGateway:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def upstream_status(code: int, retry_after: float | None = None, body: bytes = b'{"error": {}}') -> UpstreamStatusError:
    """An upstream's non-2xx answer, as the providers raise it."""
    return UpstreamStatusError(code, body, retry_after)
