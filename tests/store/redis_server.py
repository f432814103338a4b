"""Start a private redis-server on a free loopback port, so a test can kill it on purpose."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import free_port


class RedisServer:
    """`persistent=True` keeps an append-only file fsynced on every write, so a server killed
    and started again on the same port and directory comes back with every acknowledged write."""

    def __init__(self, workdir: Path, port: int | None = None, persistent: bool = False) -> None:
        self.port = port or free_port()
        self._workdir = workdir
        self._persistent = persistent
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if self._persistent else ["--appendonly", "no"]
        self._proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *durability,
             "--dir", str(self._workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    # While loading the append-only file redis answers -LOADING; only +PONG is ready.
                    if conn.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None

    def stop(self) -> None:
        self.kill()


def started_redis(workdir: Path, *, persistent: bool = False) -> RedisServer:
    """A redis-server running in `workdir` (created if need be); skips the test where none is installed."""
    if not RedisServer.available():
        pytest.skip("redis-server is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    return RedisServer(workdir, persistent=persistent).start()
