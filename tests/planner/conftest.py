"""A plan-and-execute rig for the meta-model tests: one simulator per upstream role and a gateway.

Each role (planner, joiner, cheap executor, strong executor) has its own simulator, so a
test can give one role latency or faults without touching the others. A planner "script"
is simply the fixed reply of the planner's upstream model: a JSON plan as text.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletion

from simulator import BackgroundSimulator, RecordedRequest, SimulationSettings, estimate_prompt_tokens
from simulator.wire import split_pieces
from tests.support import CLIENT_KEY, BackgroundGateway, gateway_config

META = "pe"
PLANNER_M, JOINER_M, CHEAP_M, STRONG_M = "planner-m", "joiner-m", "cheap-m", "strong-m"
MODELS = (PLANNER_M, JOINER_M, CHEAP_M, STRONG_M)
# Longer than the fast path's 160 characters, so it is planned.
GOAL = (
    "Write a short market report about electric bicycles in three European cities, with one section per "
    "city and a closing comparison that ranks the cities by how easy it is to commute by bike."
)
JOINER_ANSWER = "The joined answer: Amsterdam first, Copenhagen second, Berlin third."
PRICES = {
    PLANNER_M: {"input": "10", "output": "30"},
    JOINER_M: {"input": "5", "output": "15"},
    CHEAP_M: {"input": "0.1", "output": "0.4"},
    STRONG_M: {"input": "2", "output": "8"},
}
_MILLION = Decimal(1_000_000)
_INPUT_BLOCK = re.compile(r'<<<result id="([^"]+)" status="(\w+)">>>')


def task(tid: str, deps: Iterable[str] = (), *, tier: str = "cheap", max_tokens: int = 64,
         instruction: str | None = None) -> dict[str, Any]:
    return {"id": tid, "instruction": instruction or f"Do step {tid} of the report.", "deps": list(deps),
            "tier": tier, "max_tokens": max_tokens}


def plan_text(tasks: list[dict[str, Any]], final: str = "Combine the results into the report.") -> str:
    return json.dumps({"tasks": tasks, "final_instruction": final})


def finish(answer: str = JOINER_ANSWER) -> str:
    return json.dumps({"action": "finish", "answer": answer})


def replan(feedback: str = "Not enough detail yet; add another round.") -> str:
    return json.dumps({"action": "replan", "feedback": feedback})


def routing(*, attempts: int = 2) -> dict[str, Any]:
    # Tiny backoff keeps failures fast; a high breaker threshold keeps cool-downs out of the way.
    return {
        "retry": {"max_attempts_per_target": attempts, "initial_backoff_s": 0.01, "max_backoff_s": 0.02,
                  "jitter_s": 0.0},
        "circuit_breaker": {"failure_threshold": 1000, "cooldown_s": 30},
    }


def always_failing(**extra: Any) -> dict[str, Any]:
    return {"error_rate": 1.0, "error_kinds": {"server_error": 1.0}, **extra}


def meta_config(**overrides: Any) -> dict[str, Any]:
    """The meta-model's config: fast path off unless a test turns it on."""
    config: dict[str, Any] = {
        "planner": "planner", "joiner": "joiner", "executors": {"cheap": "cheap", "strong": "strong"},
        "fast_path": {"enabled": False},
    }
    config.update(overrides)
    return config


@dataclass
class Answer:
    completion: ChatCompletion
    headers: Any
    seconds: float

    @property
    def content(self) -> str:
        return self.completion.choices[0].message.content or ""

    @property
    def finish_reason(self) -> str:
        return self.completion.choices[0].finish_reason

    @property
    def cutover(self) -> dict[str, Any]:
        extra = self.completion.model_extra or {}
        value: dict[str, Any] = extra["cutover"]
        return value

    @property
    def trace(self) -> dict[str, Any]:
        value: dict[str, Any] = self.cutover["trace"]
        return value

    def tasks(self) -> dict[str, dict[str, Any]]:
        return {t["id"]: t for t in self.trace["tasks"]}

    @property
    def cost(self) -> Decimal:
        return Decimal(self.headers["x-cutover-cost-usd"])


@dataclass
class Rig:
    gw: BackgroundGateway
    sims: dict[str, BackgroundSimulator]
    client: OpenAI

    @property
    def planner(self) -> BackgroundSimulator:
        return self.sims[PLANNER_M]

    @property
    def joiner(self) -> BackgroundSimulator:
        return self.sims[JOINER_M]

    @property
    def cheap(self) -> BackgroundSimulator:
        return self.sims[CHEAP_M]

    @property
    def strong(self) -> BackgroundSimulator:
        return self.sims[STRONG_M]

    def ask(self, content: str = GOAL, *, key: str | None = None, trace: bool = True, **kwargs: Any) -> Answer:
        headers = {"Idempotency-Key": key} if key else None
        started = time.monotonic()
        raw = self.client.chat.completions.with_raw_response.create(
            model=META, messages=[{"role": "user", "content": content}], extra_headers=headers,
            extra_body={"cutover": {"trace": trace}}, **kwargs,
        )
        completion = raw.parse()
        return Answer(completion, raw.headers, time.monotonic() - started)

    def requests(self, model: str) -> list[RecordedRequest]:
        return [r for r in self.sims[model].requests if r.path.endswith("/chat/completions")]

    def ok_requests(self, model: str) -> list[RecordedRequest]:
        return [r for r in self.requests(model) if r.outcome == "ok"]

    def all_requests(self) -> list[RecordedRequest]:
        return [r for model in self.sims for r in self.requests(model)]


RigFactory = Callable[..., Rig]


@pytest.fixture
def make_rig() -> Iterator[RigFactory]:
    """`make_rig(plan=..., joiner=..., meta=..., <role>_settings=...)`: simulators, gateway and SDK client.

    `plan` and `joiner` are the fixed replies of the planner's and joiner's upstream models;
    `<role>_settings` are extra SimulationSettings fields for that role's simulator.
    """
    sims: list[BackgroundSimulator] = []
    gateways: list[BackgroundGateway] = []
    clients: list[OpenAI] = []

    def factory(
        *, plan: str, joiner: str = finish(), meta: dict[str, Any] | None = None,
        planner_settings: dict[str, Any] | None = None, joiner_settings: dict[str, Any] | None = None,
        cheap_settings: dict[str, Any] | None = None, strong_settings: dict[str, Any] | None = None,
        more_planners: Iterable[tuple[str, dict[str, Any]]] = (), attempts: int = 2, timeout: float = 30.0,
        extra: dict[str, Any] | None = None,
    ) -> Rig:
        replies = {PLANNER_M: plan, JOINER_M: joiner}
        per_role = {PLANNER_M: planner_settings, JOINER_M: joiner_settings, CHEAP_M: cheap_settings,
                    STRONG_M: strong_settings}
        rig_sims: dict[str, BackgroundSimulator] = {}
        for model in MODELS:
            settings: dict[str, Any] = {"output_tokens": 12}
            if model in replies:
                settings["replies"] = {model: replies[model]}
            settings.update(per_role[model] or {})
            sim = BackgroundSimulator(SimulationSettings(**settings))
            sim.start()
            sims.append(sim)
            rig_sims[model] = sim
        # Fallback targets of the planner alias, each its own upstream model with its own reply.
        planners = [PLANNER_M]
        for index, (reply, extra) in enumerate(more_planners, start=2):
            model = f"{PLANNER_M}{index}"
            sim = BackgroundSimulator(SimulationSettings(**{"replies": {model: reply}, **extra}))
            sim.start()
            sims.append(sim)
            rig_sims[model] = sim
            planners.append(model)
        config = gateway_config(
            {f"up-{m}": sim.base_url for m, sim in rig_sims.items()},
            {
                "planner": {"targets": [{"provider": f"up-{m}", "model": m} for m in planners]},
                "joiner": {"targets": [{"provider": f"up-{JOINER_M}", "model": JOINER_M}]},
                "cheap": {"targets": [{"provider": f"up-{CHEAP_M}", "model": CHEAP_M}]},
                "strong": {"targets": [{"provider": f"up-{STRONG_M}", "model": STRONG_M}]},
            },
            prices={**PRICES, **{m: PRICES[PLANNER_M] for m in planners}}, routing=routing(attempts=attempts),
            extra={"meta_models": {META: meta or meta_config()}, **(extra or {})},
        )
        gw = BackgroundGateway(config).start()
        gateways.append(gw)
        client = OpenAI(base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=timeout)
        clients.append(client)
        return Rig(gw, rig_sims, client)

    yield factory
    for client in clients:
        client.close()
    for gw in reversed(gateways):
        gw.stop()
    for sim in sims:
        sim.stop()


# What the simulator charged, recomputed from its own records and token rules -------------------


@dataclass
class Spent:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = field(default_factory=lambda: Decimal(0))
    calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def completion_tokens_of(settings: SimulationSettings, record: RecordedRequest) -> int:
    text = settings.replies.get(record.model or "", settings.reply)
    planned = settings.output_tokens if text is None else len(split_pieces(text))
    body = record.body
    cap = body.get("max_completion_tokens")
    if cap is None:
        cap = body.get("max_tokens")
    return planned if cap is None else min(planned, cap)


def spent(rig: Rig, *, abandoned: Iterable[str] = ()) -> Spent:
    """Tokens and dollars of every answered internal request, by the simulator's accounting.

    `abandoned`: models whose requests the gateway gave up on before they were answered (the
    simulator records those as "ok" too); they are left out.
    """
    total = Spent()
    for model, sim in rig.sims.items():
        if model in abandoned:
            continue
        settings = sim.settings
        price = PRICES.get(model, PRICES[PLANNER_M])
        for record in rig.ok_requests(model):
            prompt = estimate_prompt_tokens(record.body["messages"])
            completion = completion_tokens_of(settings, record)
            total.prompt_tokens += prompt
            total.completion_tokens += completion
            total.cost += (prompt * Decimal(price["input"]) + completion * Decimal(price["output"])) / _MILLION
            total.calls += 1
    return total


# Reading executor requests -----------------------------------------------------------------------


def user_text(record: RecordedRequest) -> str:
    return "\n".join(str(m.get("content", "")) for m in record.body["messages"] if m.get("role") == "user")


def executor_request_for(rig: Rig, instruction: str, model: str = CHEAP_M) -> list[RecordedRequest]:
    return [r for r in rig.requests(model) if f"Your step: {instruction}" in user_text(r)]


def input_blocks(record: RecordedRequest) -> dict[str, str]:
    """The delimited inputs of a request: result id -> status."""
    return dict(_INPUT_BLOCK.findall(user_text(record)))


def overlap_peak(intervals: Iterable[tuple[float, float]]) -> int:
    """Most intervals open at one instant (an end at t closes before a start at t opens)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda e: (e[0], e[1]))
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak
