"""`cutover serve --workers 2` as a real subprocess: metrics across workers, graceful SIGTERM."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from gateway.auth import hash_key
from simulator import BackgroundSimulator
from tests.gateway.conftest import SimFactory
from tests.gateway.helpers import HELLO, auth, metric, sse_lines
from tests.support import CLIENT_KEY, ServerProcess, wait_for


@contextmanager
def cutover_serve(tmp_path: Path, sim: BackgroundSimulator, *, workers: int) -> Iterator[ServerProcess]:
    config = {
        "server": {"request_log": False, "shutdown_grace_s": 20},
        "auth": {"keys": [{"name": "test", "hash": hash_key(CLIENT_KEY)}]},
        "providers": {"sim": {"type": "openai", "base_url": sim.base_url}},
        "models": {"chat": {"targets": [{"provider": "sim", "model": "sim-model"}]}},
        "store": {"backend": "sqlite", "path": str(tmp_path / "state.sqlite")},
    }
    path = tmp_path / "cutover.yaml"
    path.write_text(yaml.safe_dump(config))
    served = ServerProcess.cutover_serve("cutover serve", path, log=tmp_path / "cutover.stderr",
                                         args=["--workers", str(workers)])
    try:
        # Spawning workers imports the whole app in each; slow on a busy machine.
        served.wait_answers("/healthz", timeout=60)
        yield served
    finally:
        served.stop(grace_s=30)


def _worker_pids(parent: int) -> list[int]:
    """Children of `parent` started by multiprocessing's spawn (the uvicorn workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), None)
        if ppid == str(parent) and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return pids


def _scrape_fresh(served: ServerProcess) -> str:
    # A new connection per scrape, so successive scrapes can land on different workers.
    with httpx.Client(timeout=10) as client:
        response = client.get(f"{served.root_url}/metrics", headers={"Connection": "close"})
    assert response.status_code == 200
    return response.text


def test_two_workers_report_every_request_in_metrics(tmp_path: Path, sim: BackgroundSimulator) -> None:
    total = 24
    with cutover_serve(tmp_path, sim, workers=2) as served:
        wait_for(lambda: len(_worker_pids(served.proc.pid)) == 2, timeout=30, what="two worker processes")
        # Connection: close spreads requests over the workers instead of pinning one keep-alive socket.
        with openai.OpenAI(base_url=f"{served.root_url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30,
                           default_headers={"Connection": "close"}) as client:
            for _ in range(total):
                assert client.chat.completions.create(model="chat", messages=HELLO).choices[0].message.content
        assert len(sim.requests) == total

        def counted(text: str) -> float:
            return metric(text, "cutover_requests_total", endpoint="chat", alias="chat", status_class="2xx")

        wait_for(lambda: counted(_scrape_fresh(served)) == total, timeout=15, what=f"{total} requests in metrics")
        # Whichever worker answers the scrape, it must report the sum over both.
        for _ in range(8):
            assert counted(_scrape_fresh(served)) == total


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_lets_an_in_flight_stream_finish(tmp_path: Path, make_sim: SimFactory, workers: int) -> None:
    # 20 tokens at 100 ms: a stream of about two seconds.
    sim = make_sim(per_token_ms=100, output_tokens=20)
    with cutover_serve(tmp_path, sim, workers=workers) as served:
        body = {"model": "chat", "messages": HELLO, "stream": True}
        lines: list[str] = []
        with httpx.stream("POST", f"{served.root_url}/v1/chat/completions", json=body, headers=auth(),
                          timeout=30) as response:
            assert response.status_code == 200
            signalled_at = None
            for line in response.iter_lines():
                lines.append(line)
                if signalled_at is None and sum(x.startswith("data: ") for x in lines) == 3:
                    served.proc.send_signal(signal.SIGTERM)
                    signalled_at = time.monotonic()
        assert signalled_at is not None, "the stream ended before it could be interrupted"

        events = sse_lines("\n".join(lines))
        assert events[-1] == "data: [DONE]"
        assert events[-2].startswith(": x-cutover-cost-usd ")
        assert any('"finish_reason":"stop"' in e for e in events)
        # Role chunk, 20 content chunks, finish chunk: nothing was cut off by the shutdown.
        assert sum(e.startswith("data: {") for e in events) == 22

        assert served.proc.wait(timeout=30) == 0, served.stderr()
    try:
        httpx.get(f"{served.root_url}/healthz", timeout=2)
    except httpx.ConnectError:
        pass
    else:
        raise AssertionError("the gateway still answers after shutting down")
