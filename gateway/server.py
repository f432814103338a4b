"""Run the gateway under uvicorn: one or more workers, graceful shutdown.

On SIGTERM uvicorn stops accepting, lets in-flight requests (streams included)
finish up to `server.shutdown_grace_s`, then exits. Several workers share the
listening socket; their metrics meet in PROMETHEUS_MULTIPROC_DIR.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator

import uvicorn
from uvicorn.supervisors import Multiprocess

from config.loader import load_config
from gateway.app import CutoverApp, create_app
from gateway.connection import ConnectionLimits, protocol_factory
from telemetry.logs import configure_logging

CONFIG_ENV = "CUTOVER_CONFIG"


def app_from_env() -> CutoverApp:
    """uvicorn factory for worker processes, which re-read the config file themselves."""
    configure_logging()
    app = create_app(load_config(os.environ[CONFIG_ENV]))
    # What start-up built (modules, config, routes, tokenizer tables) lives as long as the
    # process. Frozen, it is out of the collector's reach, so a full collection walks only
    # what requests allocated: ~0.3 ms instead of a ~70 ms stall of the event loop, which
    # showed as a 40-60 ms p99 at c=64 (bench/README.md).
    gc.freeze()
    return app


def serve(config_path: str, host: str, port: int, workers: int, grace_s: float, limits: ConnectionLimits) -> None:
    os.environ[CONFIG_ENV] = os.path.abspath(config_path)
    multiproc_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiproc_dir = tempfile.mkdtemp(prefix="cutover-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
    config = uvicorn.Config(
        "gateway.server:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop" if _has_uvloop() else "asyncio",
        http=protocol_factory(limits),
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=int(grace_s) if grace_s else None,
        timeout_keep_alive=30,
        # The gateway is addressed directly or behind a proxy that terminates client
        # addresses itself; uvicorn's X-Forwarded-* rewriting is per-request work for nothing.
        proxy_headers=False,
        server_header=False,
    )
    try:
        if workers > 1:
            sock = config.bind_socket()
            Multiprocess(config, sockets=[sock]).run()
        else:
            _GracefulServer(config).run()
    finally:
        if multiproc_dir:
            shutil.rmtree(multiproc_dir, ignore_errors=True)


class _GracefulServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its graceful shutdown, so a clean stop would exit
    with -15; a finished graceful shutdown is a success, and exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True
