"""cutover benchmark: plan-and-execute with the client's tools against a ReAct loop (issue 13).

    .venv/bin/python bench/tool_plans_bench.py            # 6 questions per side, interleaved (75-105 s)
    .venv/bin/python bench/tool_plans_bench.py --quick    # 3 per side (about 45 s)
    .venv/bin/python bench/tool_plans_bench.py --tool-ms 2000 --reps 3 --zero-reps 0

A ParallelQA-like shape: a question that needs four independent lookups through the client's tool
`lookup(city)` and then a comparison. One gateway serves it two ways, driven by the same client (the official
openai SDK, the same messages and tools):

- `pe`, the meta-model. Its planner answers with a plan of four `lookup` tool tasks (no dependencies) and one
  cheap comparison task that depends on all four; the gateway hands the four calls back in one batch
  (finish_reason "tool_calls"), the client runs them in parallel threads and sends the results back, the run
  resumes: the comparison on the cheap executor, then the joiner (on a strong model) finishes. 2 round trips.
- `react`, a plain alias on the planner's model, whose simulator is a ReAct loop (SimulationSettings
  tool_rounds=4): one tool call per answer, the client runs it and sends the result back, four times, then the
  answer. 5 round trips, the tools one after another.

Every simulated call takes first_token_ms (+ per_token_ms per completion token, non-stream; the simulator spends
no per-token time on a tool call's arguments); the client's tool sleeps --tool-ms per lookup. Reports, per side:
median seconds per question, LLM cost per question (the x-cutover-cost-usd headers summed over its round trips),
round trips, and where each side's money goes; the speed-up and the saving; and the gateway's own time per
round trip (client round trip minus the time an upstream was busy during it, from the simulators' records), here
and in a second phase with every latency at zero, where the same ReAct loop also goes straight to its simulator
(`direct`) so the gateway's share can be told from the client's; next to the scheduler-overhead histogram
(cutover_pe_scheduler_overhead_seconds). Everything binds to 127.0.0.1; the script stops the processes it started.
Exits 1 if a target is missed, 2 if a question did not go as scripted. See bench/README.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from bench_report import Target, format_table, targets_table
from bench_stack import (
    CLIENT_KEY,
    CLIENT_KEY_ENV,
    HOST,
    CpuSnapshot,
    Proc,
    cpu_between,
    cutover_command,
    free_port,
    machine_lines,
    pinned,
    placement,
    start_process,
    wait_ready,
)
from openai import OpenAI
from planner_report import MetricsSnapshot, bucket_diff, bucket_quantile, nearest_rank
from planner_setup import revision

from simulator.wire import split_pieces

META = "pe"
REACT = "react"
# The same ReAct loop sent straight to its simulator, no gateway: the client's and loopback share of "own" time.
DIRECT = "direct"
PLANNER_M, JOINER_M, CHEAP_M = "planner-m", "joiner-m", "cheap-m"
# USD per million tokens, (input, output). The joiner is a strong model too (by default it is the planner).
PRICES = {PLANNER_M: ("10", "30"), JOINER_M: ("10", "30"), CHEAP_M: ("0.1", "0.4")}
CITIES = ("Paris", "Berlin", "Madrid", "Rome")
# What a lookup returns: a short encyclopedia-style paragraph (about 60 tokens), as a search or a knowledge-base
# tool does. The ReAct loop re-sends every earlier result with each later call; the plan passes each result once,
# to the cheap comparison. (With one-line results, ~15 tokens, the saving measured 44 % instead: bench/README.md.)
FACTS = {
    "Paris": "Paris is the capital of France, on the Seine. The city proper had 2.10 million inhabitants in 2023 "
             "on 105 km2, one of the densest in Europe; the metropolitan area has about 13 million. It is the "
             "seat of the national government.",
    "Berlin": "Berlin is the capital of Germany, on the Spree. The city proper had 3.76 million inhabitants in 2023 "
              "on 891 km2, the most of any city in the European Union; the metropolitan area has about 6 million. "
              "It is also one of the sixteen federal states.",
    "Madrid": "Madrid is the capital of Spain, on the Manzanares. The city proper had 3.33 million inhabitants in "
              "2023 on 604 km2, the second most in the European Union; the metropolitan area has about 7 million. "
              "It is the seat of the national government.",
    "Rome": "Rome is the capital of Italy, on the Tiber. The city proper had 2.75 million inhabitants in 2023 on "
            "1,285 km2, a large municipality for its population; the metropolitan area has about 4.3 million. It "
            "surrounds the Vatican City.",
}
LOOKUP_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Facts about a European capital: inhabitants and area.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": list(CITIES)}},
                       "required": ["city"], "additionalProperties": False},
    },
}
QUESTION = ("Which of Paris, Berlin, Madrid and Rome has the most inhabitants? Look each city up, then compare "
            "the four and rank them from the largest to the smallest.")
COMPARE = "Compare the four cities by inhabitants and rank them from the largest to the smallest."
ANSWER = ("Berlin has the most inhabitants (3.76 million), then Madrid (3.33 million), Rome (2.75 million) and "
          "Paris (2.10 million), counting each city proper.")
JOINER_REPLY = json.dumps({"action": "finish", "answer": ANSWER})
HTTP_TIMEOUT_S = 150.0  # above the meta-model's default 120 s deadline

# Targets of the issue.
SPEEDUP_TARGET = 2.0
SAVING_TARGET = 50.0
OVERHEAD_TARGET_MS = 5.0


class BadQuestion(Exception):
    """A question that did not go as scripted: the run stops with exit status 2."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pieces(text: str) -> int:
    return len(split_pieces(text))


def plan_text(compare_tokens: int, joiner: bool) -> str:
    """The scripted plan. Without `joiner` the comparison writes the answer (`answer_from`), as a planner
    would for this shape, and no joiner call is made; with it, the joiner writes the answer."""
    lookups = [{"id": f"l{i}", "tool": "lookup", "arguments": {"city": c}, "deps": []}
               for i, c in enumerate(CITIES, 1)]
    compare = {"id": "cmp", "instruction": COMPARE, "deps": [t["id"] for t in lookups], "tier": "cheap",
               "max_tokens": compare_tokens}
    return json.dumps({"tasks": [*lookups, compare], "final_instruction": "Answer with the ranking.",
                       "answer_from": None if joiner else "cmp"})


# -- processes ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    first_token_ms: float
    per_token_ms: float

    def settings(self) -> dict[str, float]:
        return {"first_token_ms": self.first_token_ms, "per_token_ms": self.per_token_ms, "jitter_ms": 0}

    def label(self) -> str:
        return f"{self.first_token_ms:g} ms + {self.per_token_ms:g} ms/token"


ZERO = Latency(0, 0)


@dataclass
class Sim:
    name: str
    proc: Proc
    port: int
    latency: Latency
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=f"http://{HOST}:{self.port}", timeout=10)

    def records(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.http.get("/_sim/requests").raise_for_status().json()
        return [r for r in data if r["path"].endswith("/chat/completions")]

    def clear(self) -> None:
        self.http.delete("/_sim/requests").raise_for_status()

    def set_latency(self, latency: Latency) -> None:
        self.http.patch("/_sim/behaviour", json=latency.settings()).raise_for_status()


def sim_settings(latency: Latency, **extra: Any) -> dict[str, Any]:
    return {**latency.settings(), "error_rate": 0, "record": True, "record_limit": 1000, **extra}


def start_sim(workdir: Path, name: str, core: int | None, latency: Latency, **extra: Any) -> Sim:
    port = free_port()
    config = workdir / f"{name}.yaml"
    config.write_text(json.dumps(sim_settings(latency, **extra), indent=1))  # JSON is YAML
    command = [*cutover_command(), "simulate", "--host", HOST, "--port", str(port), "--config", str(config)]
    return Sim(name, start_process(name, pinned(command, core), workdir), port, latency)


def gateway_settings(planner_port: int, react_port: int, cheap_port: int) -> dict[str, Any]:
    def up(port: int) -> dict[str, Any]:
        return {"type": "openai", "base_url": f"http://{HOST}:{port}/v1", "api_key": "sk-bench-upstream"}

    return {
        "server": {"host": HOST, "request_log": False, "shutdown_grace_s": 1},
        "auth": {"mode": "keys", "keys": [{"name": "bench", "key_env": CLIENT_KEY_ENV}]},
        "providers": {"up-planner": up(planner_port), "up-react": up(react_port), "up-cheap": up(cheap_port)},
        "models": {
            "planner": {"targets": [{"provider": "up-planner", "model": PLANNER_M}]},
            "joiner": {"targets": [{"provider": "up-planner", "model": JOINER_M}]},
            "cheap": {"targets": [{"provider": "up-cheap", "model": CHEAP_M}]},
            REACT: {"targets": [{"provider": "up-react", "model": PLANNER_M}]},
        },
        "prices": {m: {"input": i, "output": o} for m, (i, o) in PRICES.items()},
        "store": {"backend": "memory"},
        "meta_models": {META: {"planner": "planner", "joiner": "joiner", "executors": {"cheap": "cheap"},
                               "fast_path": {"enabled": False}}},
    }


# -- one question -----------------------------------------------------------------------------------------------


@dataclass
class Trip:
    """One round trip, client side, on the wall clock the simulators record with."""

    started: float
    ended: float
    cost: Decimal

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class Question:
    side: str
    seconds: float
    trips: list[Trip]
    cost: Decimal
    # Per model call: (what, prompt tokens, completion tokens, USD), from the trace (pe) or each answer (react).
    spend: list[tuple[str, int, int, Decimal]] = field(default_factory=list)
    # Per round trip: its time minus the time some upstream was busy during it (s).
    own_s: list[float] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)  # upstream model -> calls


def run_tool(arguments: str, tool_s: float) -> str:
    city = json.loads(arguments).get("city")
    time.sleep(tool_s)
    return FACTS.get(city, f"no facts about {city!r}")


def ask(client: OpenAI, side: str, tool_s: float, pool: ThreadPoolExecutor, trace: bool) -> Question:
    """The client's plain tool loop: call, run every tool call (in parallel threads), send the results back."""
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    trips: list[Trip] = []
    spend: list[tuple[str, int, int, Decimal]] = []
    extra = {"cutover": {"trace": True}} if trace and side == META else None
    looked_up: list[str] = []
    started = time.perf_counter()
    for _ in range(8):
        sent = time.time()
        raw = client.chat.completions.with_raw_response.create(model=PLANNER_M if side == DIRECT else side,
                                                               messages=messages, tools=[LOOKUP_TOOL], extra_body=extra)
        trips.append(Trip(sent, time.time(), Decimal(raw.headers.get("x-cutover-cost-usd", "0" if side == DIRECT
                                                                     else "NaN"))))
        completion = raw.parse()
        choice = completion.choices[0]
        if side == REACT and completion.usage is not None:
            spend.append((f"round trip {len(trips)}" + (" (answer)" if choice.finish_reason == "stop" else ""),
                          completion.usage.prompt_tokens, completion.usage.completion_tokens, trips[-1].cost))
        if choice.finish_reason != "tool_calls":
            seconds = time.perf_counter() - started
            check_answer(side, completion, trips)
            if sorted(looked_up) != sorted(CITIES):
                raise BadQuestion(f"{side}: looked up {looked_up}, expected each of {list(CITIES)} once")
            if side == META and trace:
                spend = trace_spend((completion.model_extra or {})["cutover"]["trace"])
            return Question(side, seconds, trips, sum((t.cost for t in trips), Decimal(0)), spend)
        calls: list[Any] = list(choice.message.tool_calls or [])
        looked_up += [json.loads(c.function.arguments).get("city") for c in calls]
        if side == META and len(calls) != len(CITIES):
            raise BadQuestion(f"{side}: {len(calls)} tool calls in one batch, expected {len(CITIES)}")
        messages.append(choice.message.model_dump(exclude_none=True))
        outputs = list(pool.map(lambda call: run_tool(call.function.arguments, tool_s), calls))
        messages += [{"role": "tool", "tool_call_id": c.id, "content": out} for c, out in zip(calls, outputs,
                                                                                          strict=True)]
    raise BadQuestion(f"{side}: no answer after 8 round trips")


def trace_spend(trace: dict[str, Any]) -> list[tuple[str, int, int, Decimal]]:
    spend = [(f"{c['role']} ({c['model']})", c["prompt_tokens"], c["completion_tokens"], Decimal(c["cost_usd"]))
             for c in trace["calls"]]
    spend += [(f"task {t['id']} ({t['model'].split('/')[-1]})", t["prompt_tokens"], t["completion_tokens"],
               Decimal(t["cost_usd"])) for t in trace["tasks"] if t["model"] != "client"]
    return spend


def check_answer(side: str, completion: Any, trips: list[Trip]) -> None:
    choice = completion.choices[0]
    if choice.finish_reason != "stop" or not choice.message.content:
        raise BadQuestion(f"{side}: finish_reason {choice.finish_reason!r}, content {choice.message.content!r}")
    if any(t.cost.is_nan() for t in trips):
        raise BadQuestion(f"{side}: a round trip without an x-cutover-cost-usd header")
    if side == META:
        extension = (completion.model_extra or {}).get("cutover") or {}
        if choice.message.content != ANSWER or len(trips) != 2:
            raise BadQuestion(f"{side}: {len(trips)} round trips, answer {choice.message.content[:80]!r}")
        if Decimal(extension.get("run_cost_usd", "NaN")) != sum((t.cost for t in trips), Decimal(0)):
            raise BadQuestion(f"{side}: run_cost_usd {extension.get('run_cost_usd')} is not the headers' sum")
    elif len(trips) != len(CITIES) + 1:
        raise BadQuestion(f"{side}: {len(trips)} round trips, expected {len(CITIES) + 1}")


def busy_within(intervals: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of [start, end] during which at least one interval was open."""
    clipped = sorted((max(a, start), min(b, end)) for a, b in intervals if b > start and a < end)
    total, reach = 0.0, start
    for a, b in clipped:
        if b > reach:
            total += b - max(a, reach)
            reach = b
    return total


def measure(client: OpenAI, sims: Sequence[Sim], side: str, tool_s: float, pool: ThreadPoolExecutor,
            trace: bool = False, joiner: bool = False) -> Question:
    for sim in sims:
        sim.clear()
    # The client's own garbage collector stays off during a question, so none of its pauses counts as the
    # gateway's time; it collects between questions.
    gc.collect()
    gc.disable()
    try:
        question = ask(client, side, tool_s, pool, trace)
    finally:
        gc.enable()
    records = [r for sim in sims for r in sim.records()]
    if any(r["outcome"] != "ok" or r["ended_at"] is None for r in records):
        raise BadQuestion(f"{side}: an upstream call was not answered ok: {[r['outcome'] for r in records]}")
    intervals = [(r["started_at"], r["ended_at"]) for r in records]
    question.own_s = [t.seconds - busy_within(intervals, t.started, t.ended) for t in question.trips]
    for r in records:
        question.calls[r["model"]] = question.calls.get(r["model"], 0) + 1
    expected = ({PLANNER_M: 1, CHEAP_M: 1} | ({JOINER_M: 1} if joiner else {}) if side == META
                else {PLANNER_M: len(CITIES) + 1})
    if question.calls != expected:
        raise BadQuestion(f"{side}: upstream calls {question.calls}, expected {expected}")
    return question


# -- report -------------------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct_ms(samples: Sequence[float], q: float) -> float | None:
    value = nearest_rank(samples, q)
    return None if value is None else value * 1000


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pair(samples: Sequence[float]) -> str:
    return f"{_ms(pct_ms(samples, 0.50))}/{_ms(pct_ms(samples, 0.99))}"


def _bound(value: float | None) -> str:
    if value is None:
        return "-"
    return ">500" if value == float("inf") else f"<={value * 1000:g}"


@dataclass
class Phase:
    name: str
    questions: dict[str, list[Question]]
    overhead_buckets: dict[float, float]
    bg_load: float

    def own(self, side: str) -> list[float]:
        return [s for q in self.questions[side] for s in q.own_s]

    def added(self, side: str, q: float) -> float | None:
        """`side`'s own time minus the direct loop's, at the same percentile (ms): what the gateway adds."""
        mine, direct = pct_ms(self.own(side), q), pct_ms(self.own(DIRECT), q)
        return None if mine is None or direct is None else mine - direct

    def own_by_trip(self, side: str, index: int) -> list[float]:
        return [q.own_s[index] for q in self.questions[side] if len(q.own_s) > index]


SIDE_COLUMNS = ("side", "questions", "round trips", "median s", "min s", "max s", "LLM $ / question",
                "upstream calls / question", "own ms / trip p50", "p99")


def side_rows(phase: Phase) -> list[list[str]]:
    rows = []
    for side in (REACT, META):
        qs = phase.questions[side]
        secs = [q.seconds for q in qs]
        calls = qs[0].calls if qs else {}
        rows.append([
            f"{side} ({'ReAct loop, planner model' if side == REACT else 'plan-and-execute'})", str(len(qs)),
            str(len(qs[0].trips)) if qs else "-", f"{median(secs):.3f}", f"{min(secs):.3f}", f"{max(secs):.3f}",
            f"{median([float(q.cost) for q in qs]):.6f}",
            ", ".join(f"{m} x{n}" for m, n in sorted(calls.items())),
            _ms(pct_ms(phase.own(side), 0.50)), _ms(pct_ms(phase.own(side), 0.99)),
        ])
    return rows


def summary(main: Phase) -> tuple[float, float]:
    react, meta = main.questions[REACT], main.questions[META]
    speedup = median([q.seconds for q in react]) / median([q.seconds for q in meta])
    saving = 100.0 * (1 - median([float(q.cost) for q in meta]) / median([float(q.cost) for q in react]))
    return speedup, saving


def overhead_lines(phases: Sequence[Phase]) -> list[str]:
    rows = []
    for phase in phases:
        for side in (META, REACT, DIRECT):
            if not phase.questions.get(side):
                continue
            trips = len(phase.questions[side][0].trips)
            per_trip = "  ".join(f"#{i + 1} {_pair(phase.own_by_trip(side, i))}" for i in range(trips))
            own = phase.own(side)
            added = "-"
            if side != DIRECT and phase.questions.get(DIRECT):
                added = f"{_ms(phase.added(side, 0.50))} / {_ms(phase.added(side, 0.99))}"
            rows.append([phase.name, side, str(len(own)), _ms(pct_ms(own, 0.50)), _ms(pct_ms(own, 0.99)),
                         _ms(max(own) * 1000 if own else None), added, per_trip])
        hist = phase.overhead_buckets
        rows.append([phase.name, f"{META} histogram", str(int(hist.get(float("inf"), 0))),
                     _bound(bucket_quantile(hist, 0.50)), _bound(bucket_quantile(hist, 0.99)), "-", "-",
                     "cutover_pe_scheduler_overhead_seconds (task ready -> call), bucket upper bound"])
    return format_table(rows, ("phase", "what", "samples", "p50 ms", "p99 ms", "max ms", "added p50 / p99",
                               "per round trip #k: p50/p99 ms"), left=(0, 1, 7)).splitlines()


def spend_lines(phase: Phase) -> list[str]:
    rows = []
    for side in (REACT, META):
        qs = phase.questions[side]
        if not qs:
            continue
        total = sum((c for *_, c in qs[0].spend), Decimal(0))
        for what, prompt, completion, cost in qs[0].spend:
            share = f"{100 * cost / total:.0f}%" if total else "-"
            rows.append([side, what, str(prompt), str(completion), f"{cost:.6f}", share])
        rows.append([side, "total", str(sum(p for _, p, _, _ in qs[0].spend)),
                     str(sum(c for _, _, c, _ in qs[0].spend)), f"{total:.6f}", ""])
    return format_table(rows, ("side", "call", "prompt tok", "completion tok", "USD", "share"),
                        left=(0, 1)).splitlines()


LEGEND = """\
median/min/max s: one question end to end on the client (every round trip, the SDK's parsing and the client's
tool time). LLM $ / question: the x-cutover-cost-usd headers of its round trips, summed (for pe the answer's
cutover.run_cost_usd is checked to be the same). own ms / trip: a round trip's client time minus the time at
least one upstream (simulator) was busy during it (see below). bg load: CPU used by other processes (or
stolen) during the phase, 100% = one core."""

OVERHEAD_LEGEND = """\
own time of a round trip: its time on the client (request sent -> response read, before the SDK parses it)
minus the time during which at least one simulator was busy with a request (from their records: request read
-> answer built). It holds the gateway's own work (for pe: restoring and saving the run, checking the tools,
planning prompts, scheduling, its internal calls' path) plus the client's and the simulators' HTTP work and
the loopback hops. direct: the same ReAct loop sent straight to its simulator, without the gateway (zero
phase only): what the client and the simulator cost. added p50 / p99: own time minus direct's, at the same
percentile: what the gateway adds to a round trip (react: a plain proxied call; pe: a meta-model round).
The histogram is the scheduler's own time per task (one LLM task per pe question here; the lookups are
handed back, not scheduled), as the upper bound of its bucket."""


def targets(main: Phase, zero: Phase) -> list[Target]:
    speedup, saving = summary(main)
    trips = len(zero.own(META))
    hist = main.overhead_buckets.copy()
    for le, count in zero.overhead_buckets.items():
        hist[le] = hist.get(le, 0.0) + count
    sched = bucket_quantile(hist, 0.99)
    return [
        Target("speed-up vs ReAct loop (median s per question)", SPEEDUP_TARGET, "x", speedup, True,
               f"{len(main.questions[META])} questions per side"),
        Target("LLM cost saved vs ReAct loop (median $ per question)", SAVING_TARGET, "%", saving, True),
        Target("pe round trip: gateway's own time, p50 (zero latency)", OVERHEAD_TARGET_MS, "ms",
               zero.added(META, 0.50), note=f"{trips} round trips; own time minus the direct loop's"),
        Target("pe round trip: gateway's own time, p99 (zero latency)", OVERHEAD_TARGET_MS, "ms",
               zero.added(META, 0.99), note="the same, at p99"),
        Target("scheduler overhead per task, p99 (pe histogram)", OVERHEAD_TARGET_MS, "ms",
               None if sched is None else sched * 1000,
               note=f"{int(hist.get(float('inf'), 0))} tasks; bucket upper bound"),
    ]


# -- driver -------------------------------------------------------------------------------------------------------


@dataclass
class Stack:
    gateway: Proc
    gw_port: int
    sims: list[Sim]

    def metrics(self) -> MetricsSnapshot:
        resp = httpx.get(f"http://{HOST}:{self.gw_port}/metrics", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                         timeout=10)
        resp.raise_for_status()
        return MetricsSnapshot.parse(resp.text)

    def cpu(self) -> CpuSnapshot:
        return CpuSnapshot.take(self.gateway, [self.gateway, *(s.proc for s in self.sims)])


def wait_for_quiet(stack: Stack, threshold: float, max_wait_s: float) -> float:
    """Wait (bounded) until other processes use less than `threshold` cores; returns their load."""
    deadline = time.monotonic() + max_wait_s
    while True:
        before = stack.cpu()
        time.sleep(0.5)
        load = cpu_between(before, stack.cpu()).background_cores
        if load <= threshold or time.monotonic() >= deadline:
            return load


def run_phase(name: str, stack: Stack, clients: dict[str, OpenAI], reps: int, warmup: int, tool_s: float,
              progress: Callable[[str], None], trace: bool, args: argparse.Namespace) -> Phase:
    questions: dict[str, list[Question]] = {side: [] for side in clients}
    joiner = args.joiner
    with ThreadPoolExecutor(max_workers=len(CITIES), thread_name_prefix="client-tool") as pool:
        for _ in range(warmup):
            for side, client in clients.items():
                measure(client, stack.sims, side, tool_s, pool, joiner=joiner)
        load = wait_for_quiet(stack, args.quiet_threshold, args.quiet_wait)
        if load > args.quiet_threshold:
            log(f"{name}: other processes use {load:.0%} of a core; measuring anyway")
        before, cpu_before = stack.metrics(), stack.cpu()
        for index in range(reps):
            # Interleaved, and the order alternates, so a slow moment of the machine hits every side.
            order = list(clients) if index % 2 == 0 else list(reversed(clients))
            for side in order:
                question = measure(clients[side], stack.sims, side, tool_s, pool, trace, joiner)
                questions[side].append(question)
                progress(f"{name} {index + 1}/{reps} {side:5}: {question.seconds:6.3f} s, ${question.cost:.6f}, "
                         f"{len(question.trips)} round trips, own ms "
                         + " ".join(f"{s * 1000:.2f}" for s in question.own_s))
        cpu = cpu_between(cpu_before, stack.cpu())
        after = stack.metrics()
    return Phase(name, questions, bucket_diff(before, after, META), cpu.background_cores)


def sdk_client(base_url: str, key: str) -> OpenAI:
    # Keep-alive connections are dropped after 2 s idle, before uvicorn's 5 s, so no request races a close. The
    # SDK takes an httpx.Client as well as its own httpx2 one (its types name only the latter).
    http = httpx.Client(limits=httpx.Limits(keepalive_expiry=2.0), timeout=HTTP_TIMEOUT_S)
    return OpenAI(base_url=base_url, api_key=key, max_retries=0, http_client=http)  # type: ignore[arg-type]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="3 questions per side instead of 6, 30 in the zero-latency phase instead of 60")
    parser.add_argument("--reps", type=int, help="measured questions per side (default 6; --quick 3)")
    parser.add_argument("--zero-reps", type=int,
                        help="questions per side in the zero-latency phase (default 60; --quick 30; 0 skips it)")
    parser.add_argument("--tool-ms", type=float, default=1000.0,
                        help="the client's time per lookup (default 1000: a search or an API call)")
    parser.add_argument("--strong", type=float, nargs=2, default=(500.0, 20.0), metavar=("FIRST_MS", "PER_TOKEN_MS"),
                        help="latency of the planner's model (planner, joiner, react): default 500 ms + 20 ms/token")
    parser.add_argument("--cheap", type=float, nargs=2, default=(300.0, 8.0), metavar=("FIRST_MS", "PER_TOKEN_MS"),
                        help="latency of the cheap executor's model: default 300 ms + 8 ms/token")
    parser.add_argument("--compare-tokens", type=int, default=60, help="max_tokens of the comparison task")
    parser.add_argument("--joiner", action="store_true",
                        help="the plan has the joiner write the answer (default: the comparison does, answer_from)")
    parser.add_argument("--quiet-threshold", type=float, default=0.25,
                        help="background CPU (cores) a phase waits to fall below before measuring (default 0.25)")
    parser.add_argument("--quiet-wait", type=float, default=10.0,
                        help="seconds a phase may wait for quiet (default 10)")
    parser.add_argument("--gateway-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1, help="core of the simulators and this client")
    args = parser.parse_args(argv)
    if args.reps is None:
        args.reps = 3 if args.quick else 6
    if args.zero_reps is None:
        args.zero_reps = 30 if args.quick else 60
    if args.reps < 1 or args.zero_reps < 0 or args.tool_ms < 0 or min(*args.strong, *args.cheap) < 0:
        parser.error("need --reps >= 1, --zero-reps >= 0 and non-negative latencies")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cores = len(os.sched_getaffinity(0))
    gw_core, client_core = (args.gateway_core, args.client_core) if cores >= 2 else (None, None)
    place = placement(gw_core, client_core)
    strong, cheap = Latency(*args.strong), Latency(*args.cheap)
    answer_tokens = pieces(JOINER_REPLY)
    started = time.monotonic()
    phases: list[Phase] = []
    procs: list[Proc] = []
    sims: list[Sim] = []
    with tempfile.TemporaryDirectory(prefix="cutover-tool-plans-") as tmp:
        workdir = Path(tmp)
        try:
            sims = [
                start_sim(workdir, "sim-planner", client_core, strong,
                          replies={PLANNER_M: plan_text(args.compare_tokens, args.joiner), JOINER_M: JOINER_REPLY}),
                # No fixed reply (it would win over tool calls): the answer is filler as long as the joiner's reply.
                start_sim(workdir, "sim-react", client_core, strong, tool_rounds=len(CITIES),
                          output_tokens=answer_tokens),
                # With answer_from the comparison writes the answer: the same text the joiner would.
                start_sim(workdir, "sim-cheap", client_core, cheap, output_tokens=args.compare_tokens,
                          **({} if args.joiner else {"replies": {CHEAP_M: ANSWER}})),
            ]
            procs += [s.proc for s in sims]
            for sim in sims:
                wait_ready(sim.proc, sim.port, "/v1/models")
            gw_port = free_port()
            config = workdir / "gateway.yaml"
            config.write_text(json.dumps(gateway_settings(*(s.port for s in sims)), indent=1))
            command = [*cutover_command(), "serve", "--config", str(config), "--port", str(gw_port), "--workers",
                       "1", "--quiet"]
            gateway = start_process("gateway", pinned(command, gw_core), workdir, {CLIENT_KEY_ENV: CLIENT_KEY})
            procs.append(gateway)
            wait_ready(gateway, gw_port, "/readyz")
            stack = Stack(gateway, gw_port, sims)
            with sdk_client(f"http://{HOST}:{gw_port}/v1", CLIENT_KEY) as client, sdk_client(
                    f"http://{HOST}:{sims[1].port}/v1", "sk-direct") as direct:
                log(f"main phase: {args.reps} questions per side after 1 warm-up each; tools {args.tool_ms:g} ms")
                phases.append(run_phase("latency", stack, {REACT: client, META: client}, args.reps, 1,
                                        args.tool_ms / 1000, log, True, args))
                if args.zero_reps:
                    for sim in sims:
                        sim.set_latency(ZERO)
                    log(f"zero-latency phase: {args.zero_reps} questions per side")
                    phases.append(run_phase("zero", stack, {REACT: client, META: client, DIRECT: direct},
                                            args.zero_reps, 3, 0.0, lambda _: None, False, args))
        except BadQuestion as exc:
            log(f"a question did not go as scripted: {exc}")
            for proc in procs:
                log(f"--- {proc.name} log:\n{proc.log_tail(15)}")
            return 2
        finally:
            for sim in sims:
                sim.http.close()
            for proc in reversed(procs):
                proc.stop()
    print_report(args, place, cores, strong, cheap, answer_tokens, phases, time.monotonic() - started)
    if len(phases) < 2:
        return 0
    missed = [t for t in targets(phases[0], phases[1]) if t.verdict == "MISS"]
    return 1 if missed else 0


def print_report(args: argparse.Namespace, place: str, cores: int, strong: Latency, cheap: Latency,
                 answer_tokens: int, phases: list[Phase], took_s: float) -> None:
    lines = ["cutover plan-and-execute with client tools vs a ReAct loop (issue 13)", *machine_lines()]
    lines[2] = lines[2].replace("machine     ", f"machine     usable cores={cores}  ", 1)
    lines[4] = f"revision    {revision()}"
    lines += [
        f"placement   {place}",
        f"upstreams   planner-m (planner, react) and joiner-m: {strong.label()}, ${PRICES[PLANNER_M][0]} / "
        f"${PRICES[PLANNER_M][1]} per M tokens; cheap-m: {cheap.label()}, ${PRICES[CHEAP_M][0]} / "
        f"${PRICES[CHEAP_M][1]}",
        f"shape       4 independent lookup(city) calls ({args.tool_ms:g} ms each on the client: pe runs its batch "
        f"in parallel threads, react one per round trip), then a comparison (pe: cheap task, max_tokens "
        f"{args.compare_tokens}, then the joiner; react: the final answer, {answer_tokens} tokens like the joiner's)",
        "client      the openai SDK (non-stream), one keep-alive connection, same messages and tools on both sides",
    ]
    print("\n".join(lines))
    main_phase = phases[0]
    print()
    print(format_table(side_rows(main_phase), SIDE_COLUMNS, left=(0, 7)))
    speedup, saving = summary(main_phase)
    print(f"speed-up x{speedup:.2f} (react / pe, median seconds); LLM cost saved {saving:.1f}% (1 - pe / react, "
          f"median $); bg load {main_phase.bg_load:.0%}")
    print(LEGEND)
    print()
    print("where one question's LLM money goes (the first measured question of each side; the runs are deterministic):")
    print("\n".join(spend_lines(main_phase)))
    print()
    print("gateway's own time per round trip (client round trip - upstream busy time), and the scheduler histogram:")
    print("\n".join(overhead_lines(phases)))
    print(OVERHEAD_LEGEND)
    if len(phases) > 1:
        print(f"(zero phase: every simulator at 0 ms, tools 0 ms, {args.zero_reps} questions per side; "
              f"bg load {phases[1].bg_load:.0%})")
        print()
        print(targets_table(targets(phases[0], phases[1])))
    print(f"\n(run took {took_s:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
