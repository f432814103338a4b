"""`cutover demo`: a migration from a slow, dear provider to a fast, cheap one, watched live.

Everything runs in this process on loopback: the gateway, two SIMULATED upstreams
(`legacy` and `modern`, the bundled simulator, not real LLMs), synthetic clients,
and the embedded SQLite store in a temporary directory. No key, no network.

Scenario 1: the migration walks shadow -> 50 -> 100 % and is promoted, each step once its gates show the
candidate under every threshold.
Scenario 2: a fresh migration runs until the candidate serves half the traffic, then
the candidate degrades (error rate, latency, cost, or the quality of its answers) and the
controller rolls it back at the first analysis that sees it. With `--degrade quality` both
migrations have a quality judge (a scripted simulated judge that prefers on-topic answers):
the degraded candidate is as fast, cheap and error-free as before, but its answers go off
topic, and the judge's win-rate gate rolls it back. The demo plan uses seconds where production uses
hours, and rolls back on the first failed check instead of the third.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn

from config.loader import parse_config
from config.migration import MigrationSpec
from gateway.app import CutoverApp, create_app
from gateway.demo_view import render, summarise_audit
from providers.simulated import SimulatedProvider
from simulator import SimulationSettings

KEY = "sk-cutover-demo"
LEGACY = {"first_token_ms": 180, "per_token_ms": 6, "jitter_ms": 40, "output_tokens": 24, "error_rate": 0.003}
MODERN = {"first_token_ms": 60, "per_token_ms": 2, "jitter_ms": 15, "output_tokens": 24, "error_rate": 0.003}
DEGRADED: dict[str, dict[str, Any]] = {
    "error": {**MODERN, "error_rate": 0.6, "error_kinds": {"server_error": 1.0}},
    "latency": {**MODERN, "first_token_ms": 1300},
    "cost": {**MODERN, "output_tokens": 160},
    "quality": {**MODERN, "quality": {"off_topic": 1.0}},
}
# The judge of `--degrade quality`: fast, cheap, and scripted (simulator.judge) to prefer on-topic answers.
JUDGE = {"first_token_ms": 15, "per_token_ms": 0, "jitter_ms": 0, "judge": {}}
QUALITY_GATES = {"judge": "judge", "sample": 1.0, "max_concurrency": 8, "canary_pair_share": 0.25,
                 "noise_share": 0.2, "max_usd_per_hour": 5}
PLAN = {
    "shadow_percent": 50, "weights": [50, 100], "min_step_s": 2.5, "max_step_s": 60, "min_samples": 30,
    "interval_s": 1.0, "consecutive_failures": 1, "post_promotion_shadow_percent": 10, "safety_window_s": 3,
}
# A step advances only once its gates show the candidate under every threshold: at 0.01 that takes about 650
# answers of the candidate's (showing a p99 under 800 ms needs that many), a few seconds of the demo's traffic.
GATES = {"alpha": 0.01}
RATE_PER_S = 200


def demo_config(state_path: Path, port: int) -> Any:
    return parse_config({
        "server": {"host": "127.0.0.1", "port": port, "request_log": False},
        "auth": {"keys": [{"name": "demo", "key_env": "DEMO_KEY"}]},
        "admin": {"keys": [{"name": "demo-operator", "key_env": "DEMO_KEY"}]},
        "providers": {
            "legacy": {"type": "simulated", "simulation": LEGACY},
            "modern": {"type": "simulated", "simulation": MODERN},
            "referee": {"type": "simulated", "simulation": JUDGE},
        },
        "models": {
            "gpt-4": {"targets": [{"provider": "legacy", "model": "legacy-large"}]},
            "judge": {"targets": [{"provider": "referee", "model": "judge-small"}]},
        },
        "prices": {
            "legacy-large": {"input": 10, "output": 30, "context_window": 128000},
            "modern-large": {"input": 2, "output": 8, "context_window": 128000},
            "judge-small": {"input": 0.1, "output": 0.4, "context_window": 128000},
        },
        "store": {"backend": "sqlite", "path": str(state_path)},
        "controller": {"sync_interval_s": 0.25, "lease_ttl_s": 3},
    }, env={"DEMO_KEY": KEY})


def spec(migration_id: str, judged: bool = False) -> dict[str, Any]:
    gates: dict[str, Any] = {"p99_ms": 800, "ttft_p99_ms": 800, "error_rate": 0.02, "cost_increase": 0.05, **GATES}
    if judged:
        gates["quality"] = QUALITY_GATES
    return {
        "id": migration_id, "alias": "gpt-4",
        "baseline": {"provider": "legacy", "model": "legacy-large"},
        "candidate": {"provider": "modern", "model": "modern-large"},
        "plan": PLAN, "sticky": {"salt": migration_id}, "gates": gates,
    }


class Traffic:
    """Synthetic clients: a steady rate of chat completions from many users, some streamed."""

    def __init__(self, base_url: str, rate_per_s: float, concurrency: int) -> None:
        self._url = base_url + "/chat/completions"
        self._interval = 1.0 / rate_per_s
        self._slots = asyncio.Semaphore(concurrency)
        self._rng = random.Random(7)
        self.sent = 0
        self.client_errors = 0
        self._task: asyncio.Task[None] | None = None

    async def _one(self, session: aiohttp.ClientSession) -> None:
        stream = self._rng.random() < 0.5
        body = {
            "model": "gpt-4", "user": f"user-{self._rng.randrange(2000)}", "stream": stream,
            "messages": [{"role": "user", "content": "Summarise our refund policy in one paragraph."}],
        }
        try:
            async with session.post(self._url, json=body, headers={"authorization": f"Bearer {KEY}"}) as resp:
                payload = await resp.read()
                if resp.status >= 500 or (stream and b"[DONE]" not in payload):
                    self.client_errors += 1
        except (aiohttp.ClientError, TimeoutError):
            self.client_errors += 1
        finally:
            self._slots.release()

    async def _run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            pending: set[asyncio.Task[None]] = set()
            next_at = time.monotonic()
            try:
                while True:
                    await self._slots.acquire()
                    task = asyncio.ensure_future(self._one(session))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    self.sent += 1
                    next_at += self._interval
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            finally:
                for task in pending:
                    task.cancel()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _watch(
    app: CutoverApp, migration_id: str, done: Callable[[dict[str, Any]], bool], deadline_s: float,
    on_state: Callable[[dict[str, Any]], None], out: Any, traffic: Traffic, title: str,
) -> dict[str, Any]:
    live = app.parts.migrations.live
    store = app.parts.migrations.store
    started = time.monotonic()
    last_drawn = ""
    while True:
        stored = await store.get_migration(migration_id)
        assert stored is not None
        history = await store.audit(migration_id)
        window = live.local_window(migration_id)
        frame = render(title, stored.state, window, history, PLAN, time.monotonic() - started, traffic.sent,
                       traffic.client_errors)
        if out.isatty():
            out.write("\x1b[H\x1b[2J" + frame + "\n")
        elif frame.splitlines()[1] != last_drawn:
            # Not a terminal: one line per phase change instead of a redrawn screen.
            last_drawn = frame.splitlines()[1]
            out.write(last_drawn + "\n")
        out.flush()
        on_state(stored.state)
        if done(stored.state) or time.monotonic() - started > deadline_s:
            return stored.state
        await asyncio.sleep(0.5)


async def run_demo(degrade: str, scenarios: set[int], out: Any = sys.stdout) -> int:
    with tempfile.TemporaryDirectory(prefix="cutover-demo-") as tmp:
        port = free_port()
        app = create_app(demo_config(Path(tmp) / "state.sqlite", port))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               access_log=False, lifespan="on"))
        serving = asyncio.ensure_future(server.serve())
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.05)
        traffic = Traffic(f"http://127.0.0.1:{port}/v1", rate_per_s=RATE_PER_S, concurrency=64)
        traffic.start()
        service = app.parts.migrations.service
        results: list[str] = []
        ok = True
        try:
            if 1 in scenarios:
                await service.create(_spec_model("demo-promote", degrade == "quality"), "demo-operator", start=True)
                final = await _watch(
                    app, "demo-promote", lambda s: s["phase"] == "promoted" and s["shadow_percent"] == 0, 90,
                    lambda s: None, out, traffic, "Scenario 1: legacy -> modern, promoted step by step",
                )
                ok &= final["phase"] == "promoted"
                results.append(f"scenario 1: {final['phase']} ({final['reason']})")
                results += summarise_audit(await app.parts.migrations.store.audit("demo-promote"))
            if 2 in scenarios:
                await service.create(_spec_model("demo-rollback", degrade == "quality"), "demo-operator", start=True)
                degraded_at: list[float] = []

                def degrade_at_half(state: dict[str, Any]) -> None:
                    if not degraded_at and state["phase"] == "canary" and state["candidate_weight_bp"] >= 5000:
                        _set_candidate(app, DEGRADED[degrade])
                        degraded_at.append(time.monotonic())

                final = await _watch(
                    app, "demo-rollback", lambda s: s["phase"] in ("rolled_back", "aborted", "promoted"), 90,
                    degrade_at_half, out, traffic, f"Scenario 2: the candidate degrades ({degrade}) mid-rollout",
                )
                ok &= final["phase"] == "rolled_back"
                took = f"{time.monotonic() - degraded_at[0]:.1f} s after the degradation" if degraded_at else "early"
                results.append(f"scenario 2: {final['phase']} {took} ({final['reason']})")
                results += summarise_audit(await app.parts.migrations.store.audit("demo-rollback"))
        finally:
            await traffic.stop()
            server.should_exit = True
            await serving
        out.write("\n".join(["", "Audit trail summary:", *results,
                             f"client requests: {traffic.sent}, client-visible errors: {traffic.client_errors}", ""]))
        return 0 if ok else 1


def _spec_model(migration_id: str, judged: bool = False) -> MigrationSpec:
    return MigrationSpec.model_validate(spec(migration_id, judged))


def _set_candidate(app: CutoverApp, behaviour: dict[str, Any]) -> None:
    provider = app.parts.registry.providers["modern"]
    assert isinstance(provider, SimulatedProvider)
    provider.server.set_settings(SimulationSettings.model_validate(behaviour))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main(degrade: str = "error", scenarios: set[int] | None = None) -> int:
    return asyncio.run(run_demo(degrade, scenarios or {1, 2}))
