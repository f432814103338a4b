"""/readyz fails while the store refuses writes, and names it; an unwritable store does not break start-up,
the controller's loop or shutdown (it once made uvicorn log "Application shutdown failed")."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx

from tests.store.read_only import read_only
from tests.support import CLIENT_KEY, ROOT, BackgroundGateway, ServerProcess, gateway_config, wait_for

PROBE_RETRY_S = 1.0  # store.probe.WriteProbe's pace while writes are refused


def _gateway(store_path: Path) -> BackgroundGateway:
    config = gateway_config(
        {"sim": {"type": "simulated"}},
        {"chat": {"targets": [{"provider": "sim", "model": "sim-chat"}]}},
        extra={"store": {"backend": "sqlite", "path": str(store_path)}},
    )
    return BackgroundGateway(config)


def _readyz(gw: BackgroundGateway | ServerProcess) -> httpx.Response:
    return httpx.get(f"{gw.root_url}/readyz", timeout=10)


def _chat(gw: BackgroundGateway) -> httpx.Response:
    return httpx.post(
        f"{gw.base_url}/chat/completions", headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=10,
        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
    )


def test_a_writable_store_is_ready(tmp_path: Path) -> None:
    with _gateway(tmp_path / "state.sqlite") as gw:
        ready = _readyz(gw)
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready" and ready.json()["store"] == "ok"


def test_a_store_in_a_read_only_directory_fails_readiness_until_it_is_fixed(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    path = state_dir / "state.sqlite"
    gw = _gateway(path)
    try:
        with read_only(state_dir):
            gw.start()
            answer = _readyz(gw)
            assert answer.status_code == 503, answer.text
            error = answer.json()["error"]
            assert error["code"] == "not_ready"
            assert f"store=not writable (sqlite store {path}: unable to open database file)" in error["message"]
            # Alive all the same: a restart would not fix the directory.
            assert httpx.get(f"{gw.root_url}/healthz", timeout=10).status_code == 200
        # Fixed while it runs: the next probes see it.
        wait_for(lambda: _readyz(gw).status_code == 200, timeout=5 * PROBE_RETRY_S, what="/readyz to recover")
        assert _readyz(gw).json()["store"] == "ok"
    finally:
        gw.stop()


def test_a_store_that_can_only_be_read_fails_readiness_but_serves(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    with _gateway(path):
        pass  # creates the database, schema included
    assert path.exists()
    with read_only(path), _gateway(path) as gw:
        # The migration state can be read, so requests are served; no migration could move, so not ready.
        answer = _readyz(gw)
        assert answer.status_code == 503, answer.text
        assert "store=not writable" in answer.json()["error"]["message"]
        assert "readonly database" in answer.json()["error"]["message"]
        assert _chat(gw).status_code == 200


def test_cutover_serve_with_an_unwritable_state_directory_reports_it_and_stops_cleanly(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    log = tmp_path / "cutover.stderr"
    with read_only(state_dir):
        # The demo config keeps its state under $CUTOVER_STATE_DIR (the container image's /data).
        server = ServerProcess.cutover_serve(
            "cutover serve", ROOT / "config" / "demo.yaml", log=log, env={"CUTOVER_STATE_DIR": str(state_dir)}
        )
        try:
            server.wait_answers("/healthz", timeout=30)
            answer = _readyz(server)
            assert answer.status_code == 503
            message = answer.json()["error"]["message"]
            assert f"store=not writable (sqlite store {state_dir}/demo-state.sqlite" in message
            server.proc.send_signal(signal.SIGTERM)
            code = server.proc.wait(timeout=10)
        finally:
            if server.alive():
                server.kill()
    output = log.read_text()
    assert code == 0, output
    assert "Traceback" not in output and "Application shutdown failed" not in output, output
    # One line says what is wrong, however long it stayed wrong; nothing fails every round.
    levels = [json.loads(line)["level"] for line in output.splitlines() if line.startswith("{")]
    assert levels.count("error") == 1, output
    assert not [line for line in output.splitlines() if line and not line.startswith("{")], output
