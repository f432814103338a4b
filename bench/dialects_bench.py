"""What each dialect costs: Chat Completions, the Responses API and legacy completions, passed through and
translated, measured in one run against the same simulator.

    .venv/bin/python bench/dialects_bench.py                      # c=1 and c=64, 2,000 requests a row
    .venv/bin/python bench/dialects_bench.py --requests 500       # quicker

One gateway worker pinned to core 0; the simulator and this load generator on core 1. The gateway serves two
aliases over the same simulator: one whose provider serves every dialect (requests pass through), one whose
provider serves Chat Completions only (Responses and completions requests are translated). Each wire is also
measured straight against the simulator, so a row's added latency is the gateway's own:

    chat                  gateway /v1/chat/completions            minus  simulator /v1/chat/completions
    responses passthrough gateway /v1/responses (native)          minus  simulator /v1/responses
    responses translated  gateway /v1/responses (chat-only)       minus  simulator /v1/chat/completions
    completions ...       likewise with /v1/completions

Targets (issue 12): passthrough rows match chat's; translated rows add at most 0.3 ms more than chat at c=1
(p50) and keep at least 60% of chat's throughput at c=64.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import orjson
from bench_client import LoadClient, RunResult, build_request
from bench_stack import (
    CLIENT_KEY,
    CLIENT_KEY_ENV,
    HOST,
    UPSTREAM_MODEL,
    cutover_command,
    free_port,
    machine_lines,
    pinned,
    start_process,
    start_simulator,
    wait_ready,
)

PROMPT = "Write one short sentence about load testing."
# A Responses stream ends with its final typed event rather than [DONE] (or, passed through, with the
# gateway's cost comment after it): the bytes that close any SSE block.
RESPONSES_END = b"\n\n"


def gateway_yaml(sim_port: int) -> str:
    url = f"http://{HOST}:{sim_port}/v1"
    return f"""\
server: {{host: {HOST}, request_log: false, shutdown_grace_s: 1}}
auth:
  mode: keys
  keys: [{{name: bench, key_env: {CLIENT_KEY_ENV}}}]
providers:
  native: {{type: openai, base_url: "{url}", api_key: sk-bench, dialects: [chat, completions, responses]}}
  chat_only: {{type: openai, base_url: "{url}", api_key: sk-bench, dialects: [chat]}}
models:
  native: {{targets: [{{provider: native, model: {UPSTREAM_MODEL}}}]}}
  chat-only: {{targets: [{{provider: chat_only, model: {UPSTREAM_MODEL}}}]}}
store: {{backend: memory}}
"""


def body(dialect: str, model: str, stream: bool) -> bytes:
    if dialect == "chat":
        data: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64}
    elif dialect == "responses":
        data = {"model": model, "input": PROMPT, "max_output_tokens": 64, "store": False}
    else:
        data = {"model": model, "prompt": PROMPT, "max_tokens": 64}
    if stream:
        data["stream"] = True
    return orjson.dumps(data)


@dataclass(frozen=True)
class Row:
    name: str
    dialect: str
    alias: str
    direct: str  # the wire the upstream is called on


ROWS = (
    Row("chat", "chat", "native", "chat"),
    Row("responses passthrough", "responses", "native", "responses"),
    Row("responses translated", "responses", "chat-only", "chat"),
    Row("completions passthrough", "completions", "native", "completions"),
    Row("completions translated", "completions", "chat-only", "chat"),
)
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "completions": "/v1/completions"}


async def measure(port: int, path: str, payload: bytes, stream: bool, end: bool | bytes, concurrency: int,
                  requests: int) -> RunResult:
    raw = build_request(HOST, port, path, payload, CLIENT_KEY)
    async with LoadClient(HOST, port, [(raw, end if stream else False)] * concurrency) as client:
        await client.run(max(100, requests // 5), 60.0)
        result = await client.run(requests, 30.0 + requests / 25.0)
    if result.errors:
        raise RuntimeError(f"{path}: {result.errors} failed requests ({result.bad_status})")
    return result


def p50_ms(result: RunResult) -> float:
    return statistics.median(result.latencies_ns) / 1e6


async def run(args: argparse.Namespace, gw_port: int, sim_port: int) -> list[str]:
    lines = [f"{'row':<26}{'mode':<12}{'c':>4}{'gw p50 ms':>11}{'added ms':>10}{'vs chat':>9}{'req/s':>9}"
             f"{'vs chat':>9}"]
    for stream in (False, True):
        mode = "stream" if stream else "non-stream"
        for concurrency in args.concurrency:
            direct: dict[str, RunResult] = {}
            for wire in ("chat", "responses", "completions"):
                end = RESPONSES_END if wire == "responses" else True
                direct[wire] = await measure(sim_port, PATHS[wire], body(wire, UPSTREAM_MODEL, stream), stream, end,
                                             concurrency, args.requests)
            chat_added = chat_rps = 0.0
            for row in ROWS:
                end = RESPONSES_END if row.dialect == "responses" else True
                result = await measure(gw_port, PATHS[row.dialect], body(row.dialect, row.alias, stream), stream,
                                       end, concurrency, args.requests)
                added = p50_ms(result) - p50_ms(direct[row.direct])
                if row.name == "chat":
                    chat_added, chat_rps = added, result.rps
                lines.append(f"{row.name:<26}{mode:<12}{concurrency:>4}{p50_ms(result):>11.3f}{added:>10.3f}"
                             f"{added - chat_added:>+9.3f}{result.rps:>9.0f}{result.rps / chat_rps:>8.2f}x")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="measured requests a row (default 2,000)")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 64])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cutover-dialects-") as tmp:
        workdir = Path(tmp)
        sim_port, gw_port = free_port(), free_port()
        sim = start_simulator(workdir, sim_port, 1)
        (workdir / "gateway.yaml").write_text(gateway_yaml(sim_port))
        command = [*cutover_command(), "serve", "--config", str(workdir / "gateway.yaml"), "--port", str(gw_port),
                   "--workers", "1", "--quiet"]
        gateway = start_process("gateway", pinned(command, 0), workdir, {CLIENT_KEY_ENV: CLIENT_KEY})
        try:
            wait_ready(sim, sim_port, "/_sim/behaviour")
            wait_ready(gateway, gw_port, "/readyz")
            try:
                lines = asyncio.run(run(args, gw_port, sim_port))
            except RuntimeError:
                print(gateway.log_tail(), file=sys.stderr)
                raise
        finally:
            gateway.stop()
            sim.stop()
    print("\n".join(machine_lines()))
    print("added: gateway p50 minus the simulator's own p50 on the wire the gateway calls; 'vs chat': that minus "
          "chat's added latency, and req/s as a ratio of chat's, in the same mode and concurrency\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
