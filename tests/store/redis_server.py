"""Start a private redis-server on a free loopback port, so a test can kill it on purpose."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from tests.support import ServerProcess, free_port


class RedisServer:
    """`persistent=True` keeps an append-only file fsynced on every write, so a server killed
    and started again on the same port and directory comes back with every acknowledged write."""

    def __init__(self, workdir: Path, port: int | None = None, persistent: bool = False) -> None:
        self.port = port or free_port()
        self._workdir = workdir
        self._persistent = persistent
        # A new process each time it is started again after a kill.
        self._server: ServerProcess | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if self._persistent else ["--appendonly", "no"]
        # redis-server logs to stdout: with it in the log, a failed start shows why.
        self._server = ServerProcess.start(
            "redis-server",
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *durability,
             "--dir", str(self._workdir)],
            port=self.port, log=self._workdir / "redis-server.log", cwd=self._workdir, with_stdout=True,
        )
        try:
            self._server.wait_ready(self._pong, timeout=10, what="answer PING")
        except BaseException:
            self.kill()  # a test that fails to start it never gets to stop it
            raise
        return self

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                # While loading the append-only file redis answers -LOADING; only +PONG is ready.
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self._server is not None:
            self._server.kill()
            self._server = None

    def stop(self) -> None:
        # A throwaway server: nothing is gained by letting it shut down gracefully.
        self.kill()


def started_redis(workdir: Path, *, persistent: bool = False) -> RedisServer:
    """A redis-server running in `workdir` (created if need be); skips the test where none is installed."""
    if not RedisServer.available():
        pytest.skip("redis-server is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    return RedisServer(workdir, persistent=persistent).start()
