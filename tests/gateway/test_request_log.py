"""The request log of a real `cutover serve`, its stderr a pipe as under a supervisor.

Every request has one whole line, in the shape the line had when it went through `logging`. That holds
for the lines of the last requests before SIGTERM too. With two workers sharing the pipe, no line is cut
by another.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
import orjson
import pytest
import yaml

from gateway.auth import hash_key
from gateway.wiring import Gateway
from simulator import BackgroundSimulator
from telemetry.request_log import RequestLog
from tests.gateway.helpers import HELLO, auth, metric
from tests.support import CLIENT_KEY, ServerProcess, cutover_command, free_port, gateway_config

ACCESS_KEYS = [
    "ts", "level", "logger", "request_id", "endpoint", "alias", "key", "provider", "model", "stream", "status",
    "latency_ms", "overhead_ms", "attempts", "prompt_tokens", "completion_tokens", "usage_estimated", "cost_usd",
]
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")


class PipeReader(threading.Thread):
    """Reads a child's stderr pipe to its end, keeping the bytes and copying them to `log` for failure reports."""

    def __init__(self, pipe: IO[bytes], log: Path) -> None:
        super().__init__(name="stderr-reader", daemon=True)
        self.pipe = pipe
        self.log = log
        self.data = bytearray()

    def run(self) -> None:
        with self.log.open("ab") as out:
            while chunk := os.read(self.pipe.fileno(), 65536):
                self.data += chunk
                out.write(chunk)
                out.flush()


@contextmanager
def serve_into_pipe(tmp_path: Path, sim: BackgroundSimulator, workers: int) -> Iterator[tuple[ServerProcess,
                                                                                             PipeReader]]:
    config = {
        # request_log is left at its default, on. Nothing is written on a timer, so the lines still held
        # when SIGTERM lands can only reach the pipe through the shutdown's flush.
        "server": {"shutdown_grace_s": 20, "request_log_flush_s": 3600},
        "auth": {"keys": [{"name": "test", "hash": hash_key(CLIENT_KEY)}]},
        "providers": {"sim": {"type": "openai", "base_url": sim.base_url}},
        "models": {"chat": {"targets": [{"provider": "sim", "model": "sim-model"}]}},
        "store": {"backend": "memory"},
    }
    path = tmp_path / "cutover.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    command = [*cutover_command(), "serve", "--config", str(path), "--port", str(port), "--workers", str(workers),
               "--quiet"]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    reader = PipeReader(proc.stderr, tmp_path / "cutover.stderr")
    reader.start()
    served = ServerProcess("cutover serve", proc, port, reader.log)
    try:
        served.wait_answers("/healthz", timeout=60)
        yield served, reader
    finally:
        served.stop(grace_s=30)
        proc.stderr.close()


def _chat(served: ServerProcess, count: int) -> list[str]:
    ids = []
    # Connection: close spreads the requests over the workers.
    with httpx.Client(base_url=served.root_url, timeout=30, headers={**auth(), "Connection": "close"}) as client:
        for _ in range(count):
            response = client.post("/v1/chat/completions", json={"model": "chat", "messages": HELLO})
            assert response.status_code == 200, response.text
            ids.append(response.headers["x-request-id"])
    return ids


@pytest.mark.parametrize("workers", [1, 2])
def test_every_request_has_one_whole_line_up_to_sigterm(tmp_path: Path, sim: BackgroundSimulator,
                                                        workers: int) -> None:
    with serve_into_pipe(tmp_path, sim, workers) as (served, reader):
        with ThreadPoolExecutor(4) as pool:
            sent = [i for ids in pool.map(_chat, [served] * 4, [60] * 4) for i in ids]
        scraped = httpx.get(f"{served.root_url}/metrics", timeout=10).text
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=30) == 0, served.stderr()
        reader.join(timeout=10)
        assert not reader.is_alive()

    lines = bytes(reader.data).splitlines()
    access = [orjson.loads(line) for line in lines if b'"logger":"cutover.access"' in line]
    # Anything else on stderr is a whole line of something else, never a piece of an access line.
    assert all(line.count(b'{"ts":') <= 1 for line in lines), served.stderr()
    assert sorted(a["request_id"] for a in access) == sorted(sent)
    for line in access:
        assert list(line) == ACCESS_KEYS
        assert TS.fullmatch(line["ts"]) and line["level"] == "info"
        assert (line["alias"], line["key"], line["provider"], line["status"]) == ("chat", "test", "sim", 200)
    assert metric(scraped, "cutover_request_log_dropped_total") == 0
    assert "cutover_request_log_dropped_total" in scraped


def test_the_setting_decides_whether_there_is_a_request_log() -> None:
    def build(request_log: bool) -> Gateway:
        return Gateway.build(gateway_config({"up": "http://127.0.0.1:9/v1"}, {"m": {"targets": [
            {"provider": "up", "model": "m"}]}}, server={"request_log": request_log}))

    assert isinstance(build(True).request_log, RequestLog)
    assert build(False).request_log is None
