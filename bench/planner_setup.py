"""The plan-and-execute benchmark's fixtures: plan shapes, simulator and gateway configs, HTTP calls.

The simulator answers every model with the same latency model (`first_token_ms` plus `per_token_ms` per
completion token). Each planner model's fixed reply is one shape's plan as JSON; the joiner model's reply is a
finish action; the executor model answers with generated filler, cut to each task's `max_tokens`, so a task's
`max_tokens` sets its latency.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from bench_stack import (
    CLIENT_KEY,
    CLIENT_KEY_ENV,
    HOST,
    REPO,
    Proc,
    cutover_command,
    pinned,
    start_process,
)

EXECUTOR_ALIAS = "cheap"
EXECUTOR_MODEL = "cheap-m"
JOINER_ALIAS = "joiner"
JOINER_MODEL = "joiner-m"
# USD per million tokens: planner and joiner priced like a strong model, executors like a cheap one.
STRONG_PRICE = (Decimal("3"), Decimal("15"))
CHEAP_PRICE = (Decimal("0.15"), Decimal("0.60"))
JOINER_REPLY = {"action": "finish", "answer": "Here is the combined report, assembled from the finished parts: "
                "every part was written and checked, and the summary lists what each one found."}
FINAL_INSTRUCTION = "Combine the task results into one answer for the user."
STEP_MARK = "Your step: ["


@dataclass(frozen=True)
class TaskSpec:
    id: str
    deps: tuple[str, ...]
    max_tokens: int


@dataclass(frozen=True)
class Shape:
    """One plan shape, served by its own meta-model whose planner alias answers with this plan."""

    name: str
    meta_model: str
    tasks: tuple[TaskSpec, ...]
    # (concurrency, per_alias_concurrency); None keeps the meta-model defaults (5, 5).
    limits: tuple[int, int] | None
    goal: str
    targets: bool = True  # whether the PASS/MISS targets apply to this row
    speedup_target: bool = False  # whether the speed-up target applies (the wide plan)

    @property
    def planner_model(self) -> str:
        return f"planner-{self.meta_model}"

    def plan(self) -> dict[str, Any]:
        tasks = [{"id": t.id, "instruction": f"[{t.id}] {self._instruction(t)}", "deps": list(t.deps),
                  "tier": "cheap", "max_tokens": t.max_tokens} for t in self.tasks]
        return {"tasks": tasks, "final_instruction": FINAL_INSTRUCTION}

    @staticmethod
    def _instruction(task: TaskSpec) -> str:
        if task.deps:
            return f"Using the results of {', '.join(task.deps)}, write the next part of the report."
        return f"Research and write part {task.id} of the report on its own."

    def limits_label(self) -> str:
        return "5/5 (default)" if self.limits is None else f"{self.limits[0]}/{self.limits[1]}"

    def critical_path(self, latency: Mapping[str, float]) -> float:
        """Longest dependency path, weighting each task by `latency[task id]`."""
        finish: dict[str, float] = {}
        for task in self.tasks:  # plan order is a topological order
            finish[task.id] = max((finish[d] for d in task.deps), default=0.0) + latency[task.id]
        return max(finish.values())


def _wide(limits: tuple[int, int] | None, name: str, meta: str, targets: bool) -> Shape:
    """Eight independent parts (60-140 tokens) and a final combine task that depends on all of them."""
    parts = (80, 120, 100, 60, 140, 90, 110, 100)
    tasks = tuple(TaskSpec(f"p{i}", (), n) for i, n in enumerate(parts, 1))
    combine = TaskSpec("combine", tuple(t.id for t in tasks), 100)
    return Shape(name, meta, (*tasks, combine), limits,
                 "Write a market report on eight regions, one section per region, then combine the sections "
                 "into a single summary with a comparison table.", targets, speedup_target=targets)


SHAPES: tuple[Shape, ...] = (
    _wide((8, 8), "parallel-8", "pe-parallel", True),
    Shape("diamond", "pe-diamond", (
        TaskSpec("a", (), 100), TaskSpec("b", ("a",), 80), TaskSpec("c", ("a",), 120), TaskSpec("d", ("b", "c"), 100),
    ), None, "Collect the facts about the incident, then analyse its causes and its impact separately, and "
             "finally write the post-mortem from both analyses."),
    Shape("chain-6", "pe-chain", tuple(
        TaskSpec(f"s{i}", (f"s{i - 1}",) if i > 1 else (), n) for i, n in enumerate((100, 80, 120, 90, 110, 100), 1)
    ), None, "Draft the essay, then revise it five times in order: structure, argument, evidence, style and "
             "finally a proof-read, each step working on the previous version."),
    _wide(None, "parallel-8 @ defaults", "pe-parallel-defaults", False),
)


def simulator_settings(shapes: Sequence[Shape], first_token_ms: float, per_token_ms: float) -> dict[str, Any]:
    replies = {shape.planner_model: json.dumps(shape.plan()) for shape in shapes}
    replies[JOINER_MODEL] = json.dumps(JOINER_REPLY)
    longest = max(t.max_tokens for shape in shapes for t in shape.tasks)
    return {
        "first_token_ms": first_token_ms, "per_token_ms": per_token_ms, "jitter_ms": 0,
        # Executor replies are generated filler this long, cut by each task's max_tokens.
        "output_tokens": longest, "error_rate": 0, "replies": replies, "record": True, "record_limit": 10_000,
    }


def _price(pair: tuple[Decimal, Decimal]) -> dict[str, str]:
    return {"input": str(pair[0]), "output": str(pair[1])}


def gateway_settings(shapes: Sequence[Shape], sim_port: int) -> dict[str, Any]:
    target = {"provider": "sim"}
    models: dict[str, Any] = {
        EXECUTOR_ALIAS: {"targets": [{**target, "model": EXECUTOR_MODEL}]},
        JOINER_ALIAS: {"targets": [{**target, "model": JOINER_MODEL}]},
    }
    prices = {EXECUTOR_MODEL: _price(CHEAP_PRICE), JOINER_MODEL: _price(STRONG_PRICE)}
    metas: dict[str, Any] = {}
    for shape in shapes:
        models[shape.planner_model] = {"targets": [{**target, "model": shape.planner_model}]}
        prices[shape.planner_model] = _price(STRONG_PRICE)
        meta: dict[str, Any] = {"planner": shape.planner_model, "joiner": JOINER_ALIAS,
                                "executors": {"cheap": EXECUTOR_ALIAS}, "fast_path": {"enabled": False}}
        if shape.limits is not None:
            meta["concurrency"], meta["per_alias_concurrency"] = shape.limits
        metas[shape.meta_model] = meta
    return {
        "server": {"host": HOST, "request_log": False, "shutdown_grace_s": 1},
        "auth": {"mode": "keys", "keys": [{"name": "bench", "key_env": CLIENT_KEY_ENV}]},
        "providers": {"sim": {"type": "openai", "base_url": f"http://{HOST}:{sim_port}/v1",
                              "api_key": "sk-bench-upstream"}},
        "models": models,
        "prices": prices,
        "store": {"backend": "memory"},
        "meta_models": metas,
    }


def start_simulator(workdir: Path, port: int, core: int | None, settings: dict[str, Any]) -> Proc:
    config = workdir / "simulator.yaml"
    config.write_text(json.dumps(settings, indent=1))  # JSON is YAML
    command = [*cutover_command(), "simulate", "--host", HOST, "--port", str(port), "--config", str(config)]
    return start_process("simulator", pinned(command, core), workdir)


def start_gateway(workdir: Path, port: int, core: int | None, settings: dict[str, Any]) -> Proc:
    config = workdir / "gateway.yaml"
    config.write_text(json.dumps(settings, indent=1))
    command = [*cutover_command(), "serve", "--config", str(config), "--port", str(port), "--workers", "1", "--quiet"]
    return start_process("gateway", pinned(command, core), workdir, {CLIENT_KEY_ENV: CLIENT_KEY})


# Servers close idle keep-alive connections (uvicorn after 5 s); reconnecting well before that avoids racing
# the close, so no request ever needs a retry.
IDLE_RECONNECT_S = 2.0


class Http:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:port; every call has a timeout."""

    def __init__(self, port: int, timeout_s: float) -> None:
        self._port = port
        self._conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
        self._last_used = time.monotonic()

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], bytes]:
        headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
        raw = None
        if body is not None:
            raw = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        if time.monotonic() - self._last_used > IDLE_RECONNECT_S:
            self._conn.close()  # http.client opens a fresh connection for the request
        try:
            self._conn.request(method, path, body=raw, headers=headers)
            resp = self._conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        except (OSError, http.client.HTTPException):
            self._conn.close()
            raise
        finally:
            self._last_used = time.monotonic()

    def json(self, method: str, path: str, body: Any = None) -> Any:
        status, _, data = self.call(method, path, body)
        if status != 200:
            raise RuntimeError(f"{method} {path} on port {self._port}: HTTP {status}: {data[:300]!r}")
        return orjson.loads(data)

    def close(self) -> None:
        self._conn.close()


def task_id_of(record: Mapping[str, Any]) -> str | None:
    """The plan task an executor request belongs to, read from the `[id]` the instruction starts with."""
    body = record.get("body")
    messages = body.get("messages") if isinstance(body, dict) else None
    for message in messages or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str) and STEP_MARK in content:
            rest = content.split(STEP_MARK, 1)[1]
            return rest.split("]", 1)[0]
    return None


def revision() -> str:
    """The commit, and which measured packages have uncommitted changes (bench_stack's check omits planner/)."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "planner", "gateway", "providers", "routing",
                                "telemetry", "config", "simulator"], cwd=REPO, capture_output=True, text=True,
                               timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    changed = sorted({line[3:].split("/", 1)[0] for line in dirty.splitlines() if len(line) > 3})
    return rev + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")
