"""cutover gateway benchmark: the gateway against the bundled simulator, same run, same client.

    .venv/bin/python bench/gateway_bench.py            # full run (4-10 min)
    .venv/bin/python bench/gateway_bench.py --quick    # short run (1-3 min)

Starts the simulator (zero latency, 20 content chunks per stream) and the gateway
(one uvicorn worker) as their own processes: the gateway pinned to one core, the
simulator and this load generator to the other. Every (mode, concurrency) is
measured directly against the simulator and through the gateway; the gateway's
cost is reported as the difference (added latency, added TTFB) and as ratios.
Then the request log's cost: a second gateway with `server.request_log` on, measured
alternately with the first at c=64. Then a bounded memory soak. See bench/README.md
for the columns and targets.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import uvloop
from bench_client import LoadClient, RunResult, build_request
from bench_extras import profile_gateway, wrk_cross_check
from bench_report import (
    MODES,
    Cell,
    Target,
    find,
    latency_targets,
    results_table,
    targets_table,
)
from bench_request_log import LogComparison, comparison_lines, comparison_target, count_access_lines, read_counters
from bench_stack import (
    ALIAS,
    CLIENT_KEY,
    HOST,
    UPSTREAM_MODEL,
    CpuSnapshot,
    CpuUsage,
    Proc,
    cpu_between,
    free_port,
    http_status,
    machine_lines,
    placement,
    start_gateway,
    start_simulator,
    wait_ready,
)

PATH = "/v1/chat/completions"
MESSAGES = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Write one short sentence about load testing."},
]
LEGEND = """\
p50/p99: request latency (request written -> response complete); ttfb: request written -> first body byte
(first SSE event); 'added' rows: gateway minus direct at the same percentile, and x = gateway/direct ratio.
req/s: completed requests per second (closed loop: c connections, one request in flight on each).
srv CPU: CPU of the server process (gateway, or simulator for 'direct') over the row's wall time;
CPU us/req: its CPU time per request (the figure least disturbed by a noisy machine).
RSS: gateway VmRSS after the row. bg load: CPU used by other processes on the machine, or stolen by the
hypervisor, during the row (100% = one core); '!' marks rows above {threshold:.0%}, which are less reliable."""
# The load generator must drive the simulator well above the gateway's target.
CLIENT_HEADROOM = 1.5
THROUGHPUT_TARGET = 3000.0
# The request log's comparison runs where the issue measured it: one worker saturated by 64 connections.
LOG_CONCURRENCY = 64


def request_body(model: str, stream: bool) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": MESSAGES, "max_tokens": 64}
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


@dataclass
class Stack:
    simulator: Proc
    gateway: Proc
    sim_port: int
    gw_port: int

    def port(self, target: str) -> int:
        return self.gw_port if target == "gateway" else self.sim_port

    def server(self, target: str) -> Proc:
        return self.gateway if target == "gateway" else self.simulator

    def raw_request(self, target: str, stream: bool) -> bytes:
        model = ALIAS if target == "gateway" else UPSTREAM_MODEL
        return build_request(HOST, self.port(target), PATH, request_body(model, stream), CLIENT_KEY)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_timeout(requests: int) -> float:
    # A bound, not an expectation: assumes at least 25 requests per second.
    return 30.0 + requests / 25.0


async def measured_run(stack: Stack, client: LoadClient, server: Proc, requests: int) -> tuple[RunResult, CpuUsage]:
    """One run with the client's garbage collector off, bracketed by CPU counters."""
    gc.collect()
    gc.disable()
    try:
        before = CpuSnapshot.take(server, [stack.simulator, stack.gateway])
        result = await client.run(requests, run_timeout(requests))
        after = CpuSnapshot.take(server, [stack.simulator, stack.gateway])
    finally:
        gc.enable()
    return result, cpu_between(before, after)


async def wait_for_quiet(stack: Stack, threshold: float, max_wait_s: float) -> float:
    """Wait (bounded) until other processes on the machine use less than ``threshold`` cores; returns their load."""
    deadline = time.monotonic() + max_wait_s
    while True:
        before = CpuSnapshot.take(stack.gateway, [stack.simulator, stack.gateway])
        await asyncio.sleep(0.5)
        load = cpu_between(before, CpuSnapshot.take(stack.gateway, [stack.simulator, stack.gateway])).background_cores
        if load <= threshold or time.monotonic() >= deadline:
            return load


async def measure_cell(stack: Stack, target: str, mode: str, concurrency: int, requests: int, warmup: int) -> Cell:
    stream = mode == "stream"
    raw = stack.raw_request(target, stream)
    async with LoadClient(HOST, stack.port(target), [(raw, stream)] * concurrency) as client:
        await client.run(warmup, run_timeout(warmup))
        result, cpu = await measured_run(stack, client, stack.server(target), requests)
    rss = stack.gateway.rss_mib() if target == "gateway" else None
    return Cell(target, mode, concurrency, result, cpu, rss)


async def measure_quietly(stack: Stack, target: str, mode: str, concurrency: int, args: argparse.Namespace) -> Cell:
    """One row: wait for quiet, measure, and measure again (keeping the quietest attempt) if disturbed."""
    best: Cell | None = None
    for attempt in range(1 + args.noisy_retries):
        if args.quiet_wait > 0:
            load = await wait_for_quiet(stack, args.quiet_threshold, args.quiet_wait)
            if load > args.quiet_threshold:
                log(f"other processes use {load:.0%} of a core after {args.quiet_wait:g} s; measuring anyway")
        cell = await measure_cell(stack, target, mode, concurrency, args.requests, args.warmup)
        if best is None or cell.cpu.background_cores < best.cpu.background_cores:
            best = cell
        if best.cpu.background_cores <= args.quiet_threshold:
            break
        if attempt < args.noisy_retries:
            log(f"row disturbed ({cell.cpu.background_cores:.0%} background load): measuring it again")
    assert best is not None
    return best


async def run_matrix(stack: Stack, args: argparse.Namespace) -> list[Cell]:
    cells: list[Cell] = []
    plan = [(m, c, t) for m in args.modes for c in args.concurrency for t in ("direct", "gateway")]
    for index, (mode, concurrency, target) in enumerate(plan, 1):
        cell = await measure_quietly(stack, target, mode, concurrency, args)
        cells.append(cell)
        log(f"[{index:2}/{len(plan)}] {mode:10} c={concurrency:<3} {target:8} {cell.rps:8,.0f} req/s  "
            f"p50 {cell.lat(50) or 0:7.3f} ms  p99 {cell.lat(99) or 0:7.3f} ms  errors {cell.result.errors}")
    return cells


async def run_log_comparison(off: Stack, on: Stack, args: argparse.Namespace) -> tuple[list[Cell], list[Cell]]:
    """The same rows on the gateway without and with its request log, alternating off, on, on, off, ...

    Alternating in one run, the two see the same machine; a slow spell of the noisy neighbour lands on
    both sides instead of on one."""
    offs: list[Cell] = []
    ons: list[Cell] = []
    for index in range(args.request_log_rounds):
        order = [(off, offs, "off"), (on, ons, "on")]
        for stack, cells, name in order if index % 2 == 0 else order[::-1]:
            cell = await measure_quietly(stack, "gateway", "non-stream", LOG_CONCURRENCY, args)
            cells.append(cell)
            log(f"[request log round {index + 1}/{args.request_log_rounds}] log {name:3} c={LOG_CONCURRENCY} "
                f"{cell.rps:8,.0f} req/s  CPU {cell.server_us_per_req or 0:5.0f} us/req  "
                f"bg load {cell.cpu.background_cores:.0%}  errors {cell.result.errors}")
    return offs, ons


@dataclass
class Soak:
    requests: int
    concurrency: int
    stream_connections: int
    rss_start: float
    rss_half: float
    rss_end: float
    half_at: int
    results: list[RunResult]
    server_us_per_req: float
    served_before: int = 0

    @property
    def growth(self) -> float:
        return self.rss_end - self.rss_half


async def run_soak(stack: Stack, total: int, concurrency: int) -> Soak:
    """``total`` requests at ``concurrency``: one connection in four streams, the rest do not."""
    streams = max(1, concurrency // 4) if concurrency > 1 else 0
    specs = [(stack.raw_request("gateway", False), False)] * (concurrency - streams)
    specs += [(stack.raw_request("gateway", True), True)] * streams
    half = total // 2
    async with LoadClient(HOST, stack.gw_port, specs) as client:
        rss_start = stack.gateway.rss_mib()
        log(f"soak: {total:,} requests at c={concurrency}, RSS at start {rss_start:.1f} MiB")
        first, cpu1 = await measured_run(stack, client, stack.gateway, half)
        rss_half = stack.gateway.rss_mib()
        log(f"soak: {half:,} done ({first.rps:,.0f} req/s), RSS {rss_half:.1f} MiB")
        second, cpu2 = await measured_run(stack, client, stack.gateway, total - half)
        rss_end = stack.gateway.rss_mib()
        log(f"soak: {total:,} done ({second.rps:,.0f} req/s), RSS {rss_end:.1f} MiB")
    done = first.completed + second.completed
    us = (cpu1.server_s + cpu2.server_s) / done * 1e6 if done else 0.0
    return Soak(total, concurrency, streams, rss_start, rss_half, rss_end, half, [first, second], us)


def soak_lines(soak: Soak) -> list[str]:
    done = sum(r.completed for r in soak.results)
    streams = sum(r.streams for r in soak.results)
    errors = sum(r.errors for r in soak.results)
    wall = sum(r.wall_s for r in soak.results)
    return [
        f"memory soak: {soak.requests:,} requests through the gateway at c={soak.concurrency} "
        f"({soak.concurrency - soak.stream_connections} non-stream + {soak.stream_connections} streaming connections)",
        f"  completed {done:,} ({done - streams:,} non-stream, {streams:,} streams), errors {errors}, "
        f"{done / wall if wall else 0:,.0f} req/s, gateway CPU {soak.server_us_per_req:,.0f} us/request",
        f"  gateway had served ~{soak.served_before:,} requests before the soak",
        f"  gateway RSS: start {soak.rss_start:.1f} MiB, after {soak.half_at:,} {soak.rss_half:.1f} MiB, "
        f"after {soak.requests:,} {soak.rss_end:.1f} MiB; growth between the two: {soak.growth:+.2f} MiB",
    ]


def soak_targets(soak: Soak | None, limit: float, tolerance: float) -> list[Target]:
    if soak is None:
        return [Target("gateway RSS after the soak", limit, "MiB", None, note="soak skipped")]
    return [
        Target(f"gateway RSS after {soak.requests:,}-request soak", limit, "MiB", soak.rss_end),
        Target(f"RSS growth {soak.half_at:,} -> {soak.requests:,} requests", tolerance, "MiB", soak.growth,
               note=f"tolerance {tolerance:g} MiB"),
    ]


def client_check(cells: list[Cell]) -> Target:
    """Validity of the run: the client alone must drive the simulator well past the throughput target."""
    direct = [c for c in cells if c.target == "direct" and c.mode == "non-stream"]
    best = max(direct, key=lambda c: c.rps) if direct else None
    note = ""
    if best is not None and best.result.completed:
        us = best.result.client_cpu_s / best.result.completed * 1e6
        note = f"c={best.concurrency}, sharing its core with the simulator; client CPU {us:.0f} us/request"
    return Target("[bench validity] client drives simulator directly", CLIENT_HEADROOM * THROUGHPUT_TARGET,
                  "req/s", best.rps if best else None, True, note)


def print_report(header: list[str], cells: list[Cell], soak: Soak | None, extra: list[str],
                 args: argparse.Namespace, log_cmp: LogComparison | None = None) -> list[Target]:
    stream_cell = find(cells, "gateway", "stream", max(args.concurrency))
    frames = ""
    if stream_cell and stream_cell.result.streams:
        frames = f"; {stream_cell.result.sse_frames / stream_cell.result.streams:.0f} SSE data frames per stream"
    print("\n".join(header))
    print(f"requests    {args.requests:,} measured per row after {args.warmup:,} warm-up requests; "
          f"{len(args.concurrency)} concurrencies x {len(args.modes)} modes x (direct, gateway){frames}")
    print()
    print(results_table(cells, args.quiet_threshold))
    print(LEGEND.format(threshold=args.quiet_threshold))
    print()
    if soak is not None:
        print("\n".join(soak_lines(soak)))
        print()
    if log_cmp is not None:
        print("\n".join(comparison_lines(log_cmp, args.quiet_threshold)))
        print()
    for line in extra:
        print(line)
    if extra:
        print()
    targets = [*latency_targets(cells), *soak_targets(soak, args.rss_limit_mib, args.rss_tolerance_mib)]
    if log_cmp is not None:
        targets.append(comparison_target(log_cmp))
    targets.append(client_check(cells))
    print(targets_table(targets))
    return targets


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run: 1,000 requests per row, 10,000-request soak")
    parser.add_argument("--requests", type=int, help="measured requests per row (default 5,000; --quick 1,000)")
    parser.add_argument("--warmup", type=int, help="warm-up requests per row (default requests/5, at least 200)")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64],
                        help="comma-separated concurrencies (default 1,16,64)")
    parser.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES),
                        help="comma-separated subset of non-stream,stream")
    parser.add_argument("--soak", type=int, help="soak requests (default 100,000; --quick 10,000; 0 skips it)")
    parser.add_argument("--soak-concurrency", type=int, default=32)
    parser.add_argument("--rss-limit-mib", type=float, default=120.0)
    parser.add_argument("--rss-tolerance-mib", type=float, default=2.0,
                        help="allowed RSS growth between the soak's halves (default 2 MiB)")
    parser.add_argument("--gateway-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1, help="core of the simulator and the load generator")
    parser.add_argument("--quiet-threshold", type=float, default=0.25,
                        help="background CPU (cores) above which a row waits, and is marked '!' (default 0.25)")
    parser.add_argument("--quiet-wait", type=float,
                        help="seconds a row may wait for other processes to go quiet (default 60; --quick 15)")
    parser.add_argument("--noisy-retries", type=int, default=2,
                        help="re-measure a row up to N more times while its bg load is above the threshold, "
                        "keeping the quietest attempt (default 2)")
    parser.add_argument("--request-log-rounds", type=int, default=2,
                        help=f"rounds of non-stream c={LOG_CONCURRENCY} rows with the request log off and on, "
                        "alternating, in a second gateway process (default 2; 0 skips)")
    parser.add_argument("--wrk", action="store_true", help="cross-check c=64 throughput with wrk (if installed)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the gateway with py-spy at the highest concurrency and print where time goes")
    parser.add_argument("--profile-dir", type=Path, help="with --profile: keep py-spy's raw stacks here")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any target is missed")
    args = parser.parse_args(argv)
    if args.requests is None:
        args.requests = 1000 if args.quick else 5000
    if args.warmup is None:
        args.warmup = max(200, args.requests // 5)
    if args.soak is None:
        args.soak = 10_000 if args.quick else 100_000
    if args.quiet_wait is None:
        args.quiet_wait = 15.0 if args.quick else 60.0
    bad = [m for m in args.modes if m not in MODES]
    if bad or args.requests < 1 or min(args.concurrency) < 1 or args.soak < 0 or args.request_log_rounds < 0:
        parser.error("invalid --modes, --requests, --concurrency, --soak or --request-log-rounds")
    return args


def run_async(factory: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(factory())


def smoke_test(stack: Stack) -> None:
    """One request of each kind through the gateway, so a broken setup fails loudly, not as a table of errors."""
    headers = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}
    for stream in (False, True):
        status, resp_headers, body = http_status(stack.gw_port, "POST", PATH, request_body(ALIAS, stream), headers)
        if status != 200 or resp_headers.get("x-cutover-provider") != "sim":
            raise RuntimeError(f"gateway smoke test failed ({status}): {body[:300]!r}\n{stack.gateway.log_tail()}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A plain `kill` must still stop the simulator and the gateway (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cores = len(os.sched_getaffinity(0))
    header = [f"cutover gateway benchmark{' (--quick)' if args.quick else ''}", *machine_lines()]
    header[2] = header[2].replace("machine     ", f"machine     usable cores={cores}  ", 1)
    gw_core, client_core = (args.gateway_core, args.client_core) if cores >= 2 else (None, None)
    header.append(f"placement   {placement(gw_core, client_core)}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cutover-bench-") as tmp:
        workdir = Path(tmp)
        sim_port, gw_port = free_port(), free_port()
        simulator = start_simulator(workdir, sim_port, client_core)
        gateway: Proc | None = None
        logging_gateway: Proc | None = None
        try:
            wait_ready(simulator, sim_port, "/v1/models")
            gateway = start_gateway(workdir, gw_port, sim_port, gw_core)
            wait_ready(gateway, gw_port, "/readyz")
            stack = Stack(simulator, gateway, sim_port, gw_port)
            smoke_test(stack)
            header.append(f"gateway     pid {gateway.pid}, RSS after start-up {gateway.rss_mib():.1f} MiB")
            logged: Stack | None = None
            if args.request_log_rounds:
                log_port = free_port()
                logging_gateway = start_gateway(workdir, log_port, sim_port, gw_core, name="gateway-log",
                                                request_log=True)
                wait_ready(logging_gateway, log_port, "/readyz")
                logged = Stack(simulator, logging_gateway, sim_port, log_port)
                smoke_test(logged)
                header.append(f"            and pid {logging_gateway.pid}, the same with server.request_log on "
                              f"(output to a file)")
            cells = run_async(lambda: run_matrix(stack, args))
            log_cmp: LogComparison | None = None
            if logged is not None and logging_gateway is not None:
                offs, ons = run_async(lambda: run_log_comparison(stack, logged, args))
                log_cmp = LogComparison(LOG_CONCURRENCY, offs, ons)
                log_cmp.requests_counted, log_cmp.dropped = read_counters(logged.gw_port)
                # Its shutdown is what flushes the last lines: count them after it.
                logging_gateway.stop()
                log_cmp.lines = count_access_lines(logging_gateway.log_path)
            extra: list[str] = []
            if args.wrk:
                extra += wrk_cross_check(stack, cells, max(args.concurrency), log)
            if args.profile:
                extra += profile_gateway(stack, workdir, lambda mode: run_async(
                    lambda: measure_cell(stack, "gateway", mode, max(args.concurrency), args.requests, 200)
                ), args.modes, log, args.profile_dir)
            soak = run_async(lambda: run_soak(stack, args.soak, args.soak_concurrency)) if args.soak else None
            if soak is not None:
                soak.served_before = sum(c.result.completed + args.warmup for c in cells if c.target == "gateway")
            targets = print_report(header, cells, soak, extra, args, log_cmp)
            print(f"\n(run took {time.monotonic() - started:.0f} s)")
        finally:
            for proc in (gateway, logging_gateway):
                if proc is not None:
                    proc.stop()
            simulator.stop()
    missed = [t for t in targets if t.verdict == "MISS"]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
