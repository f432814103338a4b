"""Small requests while big prompts flow: does counting a big prompt's tokens stall everyone else?

    .venv/bin/python bench/big_prompts.py                 # 3.2 MB prompts, 15 s per phase
    .venv/bin/python bench/big_prompts.py --prompt-kb 400 --seconds 10

One gateway (one worker) in front of the simulator, a route whose model has a 1M-token window (so a 3.2 MB
prompt is over the cheap byte bound and must be counted exactly, as with the seeds' `gemini-2.5-flash`).
Two phases in one run: small chat requests alone, then the same small requests while `--big` clients send
big prompts back to back. The table gives the small requests' latency in each phase and the ratio; the
gateway's own cost of a big prompt shows up as the small requests' p99 in the second phase.
To measure another revision, run this file from that revision's checkout (its gateway is what is started).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
from bench_stack import (
    CLIENT_KEY,
    CLIENT_KEY_ENV,
    HOST,
    cutover_command,
    free_port,
    machine_lines,
    start_process,
    start_simulator,
    wait_ready,
)

SMALL = orjson.dumps({"model": "chat", "max_tokens": 16, "messages": [{"role": "user", "content": "Say hello."}]})


def gateway_yaml(sim_port: int) -> str:
    return f"""\
server: {{host: {HOST}, request_log: false, shutdown_grace_s: 1, max_body_bytes: 8388608}}
auth:
  mode: keys
  keys: [{{name: bench, key_env: {CLIENT_KEY_ENV}}}]
providers:
  sim: {{type: openai, base_url: "http://{HOST}:{sim_port}/v1", api_key: sk-bench-upstream}}
models:
  chat: {{targets: [{{provider: sim, model: long-context}}]}}
prices:
  long-context: {{input: 0.30, output: 2.50, context_window: 1000000}}
"""


def big_body(kilobytes: int) -> bytes:
    words = "The quick brown fox jumps over the lazy dog. " * (kilobytes * 1024 // 45 + 1)
    return orjson.dumps({"model": "chat", "max_tokens": 16, "messages": [{"role": "user", "content": words}]})


async def small_requests(client: httpx.AsyncClient, until: float) -> list[float]:
    latencies = []
    while time.perf_counter() < until:
        started = time.perf_counter()
        response = await client.post("/v1/chat/completions", content=SMALL)
        latencies.append(time.perf_counter() - started)
        response.raise_for_status()
    return latencies


async def big_requests(client: httpx.AsyncClient, body: bytes, until: float) -> int:
    sent = 0
    while time.perf_counter() < until:
        response = await client.post("/v1/chat/completions", content=body)
        response.raise_for_status()
        sent += 1
    return sent


async def phase(port: int, seconds: float, big: int, body: bytes) -> tuple[list[float], int]:
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", headers=headers, timeout=60) as client:
        await small_requests(client, time.perf_counter() + 1.0)  # warm the connections and the vocabulary
        if big:
            (await client.post("/v1/chat/completions", content=body)).raise_for_status()
        until = time.perf_counter() + seconds
        results = await asyncio.gather(small_requests(client, until), *[big_requests(client, body, until)
                                                                          for _ in range(big)])
    small: list[float] = results[0]
    return small, sum(results[1:])


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt-kb", type=int, default=3200, help="size of a big prompt (default 3,200 KB)")
    parser.add_argument("--big", type=int, default=2, help="clients sending big prompts (default 2)")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase (default 15)")
    args = parser.parse_args()
    body = big_body(args.prompt_kb)
    with tempfile.TemporaryDirectory(prefix="cutover-big-prompts-") as tmp:
        workdir = Path(tmp)
        sim_port, port = free_port(), free_port()
        sim = start_simulator(workdir, sim_port, None)
        (workdir / "gateway.yaml").write_text(gateway_yaml(sim_port))
        command = [*cutover_command(), "serve", "--config", str(workdir / "gateway.yaml"), "--port", str(port),
                   "--workers", "1", "--quiet"]
        gateway = start_process("gateway", command, workdir, {CLIENT_KEY_ENV: CLIENT_KEY})
        try:
            wait_ready(sim, sim_port, "/_sim/behaviour")
            wait_ready(gateway, port, "/readyz")
            alone, _ = asyncio.run(phase(port, args.seconds, 0, body))
            beside, sent = asyncio.run(phase(port, args.seconds, args.big, body))
        finally:
            gateway.stop()
            sim.stop()
    print("\n".join(machine_lines()))
    print(f"big prompt: {len(body) / 1e6:.2f} MB, {args.big} clients sending them back to back; "
          f"{args.seconds:g} s per phase; one gateway worker\n")
    print(f"{'small requests':<34}{'n':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, latencies in (("alone", alone), (f"beside big prompts ({sent} sent)", beside)):
        print(f"{name:<34}{len(latencies):>7}{statistics.median(latencies) * 1000:>9.2f}"
              f"{quantile(latencies, 0.99) * 1000:>9.2f}{max(latencies) * 1000:>9.2f}")
    print(f"\np99 beside / p99 alone: {quantile(beside, 0.99) / quantile(alone, 0.99):.1f}x")


if __name__ == "__main__":
    sys.exit(main())
