"""A plan-and-execute run that calls the client's tools, resumed on another replica.

Two real `cutover serve` processes share one Redis store. A client offers its own tool to the
meta-model on replica A and gets the ready tool calls back (finish_reason "tool_calls"); A saved
the run's state in the store (record kind "run") before answering. A is then killed (SIGKILL:
nothing flushed, nothing handed over) and the client sends the tool results to replica B, which
must resume the run from Redis alone: no second plan, the comparison run once with both results,
and the run's usage and cost totals covering both rounds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from openai import OpenAI
from openai.types.chat import ChatCompletion

from gateway.auth import hash_key
from simulator import BackgroundSimulator, RecordedRequest, SimulationSettings, estimate_prompt_tokens
from tests.planner.conftest import (
    CHEAP_M,
    JOINER_ANSWER,
    JOINER_M,
    META,
    MODELS,
    PLANNER_M,
    PRICES,
    STRONG_M,
    completion_tokens_of,
    finish,
    meta_config,
    routing,
    user_text,
)
from tests.planner.test_meta_client_tools import FORECAST, QUESTION, WEATHER_TOOL, weather_plan
from tests.replicas.harness import Replica, start_replicas, stop_all
from tests.store.redis_server import RedisServer
from tests.support import CLIENT_KEY

_MILLION = Decimal(1_000_000)
COMPARE = "Compare the two forecasts for a picnic."


# -- the rig: one simulator per role, two replicas on one Redis ------------------------------------


@pytest.fixture
def role_sims() -> Iterator[dict[str, BackgroundSimulator]]:
    """One upstream per role: the planner answers the weather plan, the joiner finishes, executors are plain."""
    replies = {PLANNER_M: weather_plan(), JOINER_M: finish()}
    started: dict[str, BackgroundSimulator] = {}
    try:
        for model in MODELS:
            settings: dict[str, Any] = {"output_tokens": 12}
            if model in replies:
                settings["replies"] = {model: replies[model]}
            sim = BackgroundSimulator(SimulationSettings(**settings))
            sim.start()
            started[model] = sim
        yield started
    finally:
        for sim in started.values():
            sim.stop()


def write_meta_config(path: Path, sims: dict[str, BackgroundSimulator], redis_url: str) -> Path:
    """The replicas' shared config: the four role aliases, the meta-model, and the test's own Redis as store."""
    config = {
        "server": {"request_log": False, "shutdown_grace_s": 5},
        "auth": {"keys": [{"name": "test", "hash": hash_key(CLIENT_KEY)}]},
        "providers": {f"up-{m}": {"type": "openai", "base_url": sim.base_url} for m, sim in sims.items()},
        "models": {
            "planner": {"targets": [{"provider": f"up-{PLANNER_M}", "model": PLANNER_M}]},
            "joiner": {"targets": [{"provider": f"up-{JOINER_M}", "model": JOINER_M}]},
            "cheap": {"targets": [{"provider": f"up-{CHEAP_M}", "model": CHEAP_M}]},
            "strong": {"targets": [{"provider": f"up-{STRONG_M}", "model": STRONG_M}]},
        },
        "prices": PRICES,
        "routing": routing(),
        "store": {"backend": "redis", "url": redis_url},
        "meta_models": {META: meta_config()},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class Pair:
    """Replicas A and B on one config and one Redis, and the role simulators behind them."""

    a: Replica
    b: Replica
    sims: dict[str, BackgroundSimulator]
    redis_url: str

    def client(self, replica: Replica) -> OpenAI:
        # max_retries=0: every request the test sends reaches exactly the replica it names, once.
        return OpenAI(base_url=f"{replica.root_url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)

    def requests(self, model: str) -> list[RecordedRequest]:
        return [r for r in self.sims[model].requests if r.path.endswith("/chat/completions")]

    def ok_requests(self, model: str) -> list[RecordedRequest]:
        return [r for r in self.requests(model) if r.outcome == "ok"]

    def compare_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests(CHEAP_M) if COMPARE in user_text(r)]

    def counts(self) -> dict[str, int]:
        return {model: len(self.requests(model)) for model in self.sims}


@pytest.fixture
def pair(tmp_path: Path, redis_server: RedisServer, role_sims: dict[str, BackgroundSimulator]) -> Iterator[Pair]:
    config = write_meta_config(tmp_path / "cutover.yaml", role_sims, redis_server.url)
    replicas = start_replicas(config, 2, tmp_path)
    yield Pair(replicas[0], replicas[1], role_sims, redis_server.url)
    stop_all(replicas)
    # Shown by pytest only when the test failed: what each gateway logged.
    for replica in replicas:
        if log := replica.stderr().strip():
            print(f"--- {replica.name} stderr (tail) ---\n{log[-1500:]}")


# -- the client's side of the tool loop --------------------------------------------------------------


def ask(client: OpenAI, messages: list[Any]) -> ChatCompletion:
    return client.chat.completions.create(
        model=META, messages=messages, tools=[WEATHER_TOOL],  # type: ignore[list-item]
        extra_body={"cutover": {"trace": True}},
    )


def with_results(messages: list[Any], batch: ChatCompletion) -> list[Any]:
    """The next request of the SDK's tool loop: the assistant's tool calls, then one result for each."""
    message = batch.choices[0].message
    following: list[Any] = [*messages, message]
    for call in message.tool_calls or ():
        city = json.loads(call.function.arguments)["city"]  # type: ignore[union-attr]
        following.append({"role": "tool", "tool_call_id": call.id, "content": FORECAST[city]})
    return following


def extension(completion: ChatCompletion) -> dict[str, Any]:
    value: dict[str, Any] = (completion.model_extra or {})["cutover"]
    return value


def first_round(pair: Pair) -> tuple[list[Any], ChatCompletion]:
    """The question with the client's tool, on A: the batch of both lookups, the run saved in Redis."""
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    with pair.client(pair.a) as client:
        batch = ask(client, messages)
    assert batch.choices[0].finish_reason == "tool_calls"
    calls = batch.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_weather"]  # type: ignore[union-attr]
    assert sorted(json.loads(c.function.arguments)["city"] for c in calls) == ["Berlin", "Paris"]  # type: ignore[union-attr]
    assert batch.choices[0].message.content is None
    run_id = extension(batch)["run_id"]
    # A saved the run before it answered: the state is in the shared store, not only in A.
    with redis.Redis.from_url(pair.redis_url) as store:
        assert store.exists(f"cutover:run:{run_id}") == 1
    return messages, batch


# -- what the simulators charged, by their own records --------------------------------------------------


@dataclass
class Charged:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal(0)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def charged(pair: Pair) -> Charged:
    """Tokens and dollars of every answered internal request, recomputed from the simulators' records."""
    total = Charged()
    for model, sim in pair.sims.items():
        price = PRICES[model]
        for record in pair.ok_requests(model):
            prompt = estimate_prompt_tokens(record.body["messages"])
            completion = completion_tokens_of(sim.settings, record)
            total.prompt_tokens += prompt
            total.completion_tokens += completion
            total.cost += (prompt * Decimal(price["input"]) + completion * Decimal(price["output"])) / _MILLION
    return total


# -- the tests ---------------------------------------------------------------------------------------


def test_tool_results_sent_to_another_replica_after_a_crash_resume_the_run(pair: Pair) -> None:
    messages, batch = first_round(pair)
    assert len(pair.ok_requests(PLANNER_M)) == 1
    assert pair.requests(JOINER_M) == [] and pair.compare_requests() == []

    pair.a.kill()  # SIGKILL between the round trips: no graceful stop, nothing handed over
    assert not pair.a.alive()

    with pair.client(pair.b) as client:
        answer = ask(client, with_results(messages, batch))

    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content == JOINER_ANSWER
    assert not answer.choices[0].message.tool_calls
    # The run was resumed, not planned again, and finished with one joiner call.
    assert len(pair.requests(PLANNER_M)) == 1
    assert len(pair.ok_requests(JOINER_M)) == 1
    # The comparison ran once, on B, with both forecasts as its input.
    (compare,) = pair.compare_requests()
    assert FORECAST["Paris"] in user_text(compare) and FORECAST["Berlin"] in user_text(compare)
    assert pair.requests(STRONG_M) == []

    # Each answer bills its own round; the run's totals in B's answer cover both rounds.
    first, last = extension(batch), extension(answer)
    assert first["round"] == 0 and last["round"] == 1 and first["run_id"] == last["run_id"]
    assert batch.usage is not None and answer.usage is not None
    assert Decimal(first["cost_usd"]) > 0 and Decimal(last["cost_usd"]) > 0
    assert Decimal(last["run_cost_usd"]) == Decimal(first["cost_usd"]) + Decimal(last["cost_usd"])
    assert last["run_usage"]["total_tokens"] == batch.usage.total_tokens + answer.usage.total_tokens
    assert last["run_usage"]["prompt_tokens"] == batch.usage.prompt_tokens + answer.usage.prompt_tokens
    # ...and they are what the upstreams charged for every call of the run, on both replicas.
    upstream = charged(pair)
    assert last["run_usage"]["prompt_tokens"] == upstream.prompt_tokens
    assert last["run_usage"]["completion_tokens"] == upstream.completion_tokens
    assert last["run_usage"]["total_tokens"] == upstream.total_tokens
    assert Decimal(last["run_cost_usd"]) == upstream.cost
    rounds = last["trace"]["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]
    assert [c["tool"] for c in rounds[0]["tool_calls"]] == ["get_weather", "get_weather"]
    assert "cmp" in rounds[1]["tasks_finished"]


def test_a_round_retried_on_another_replica_gets_the_same_answer_and_runs_nothing_twice(pair: Pair) -> None:
    messages, batch = first_round(pair)
    resume = with_results(messages, batch)
    with pair.client(pair.a) as client:
        answered = ask(client, resume)
    assert answered.choices[0].finish_reason == "stop"
    assert answered.choices[0].message.content == JOINER_ANSWER
    counts = pair.counts()
    assert counts[PLANNER_M] == 1 and counts[JOINER_M] == 1

    # The client never got A's answer (say) and sends the same request again, this time to B.
    with pair.client(pair.b) as client:
        again = ask(client, resume)

    assert again.choices[0].finish_reason == "stop"
    assert again.choices[0].message.content == JOINER_ANSWER
    # The very answer A gave, read from the store: same completion, same bill of the round.
    assert again.id == answered.id
    assert again.usage == answered.usage
    assert extension(again)["run_cost_usd"] == extension(answered)["run_cost_usd"]
    assert extension(again)["cost_usd"] == extension(answered)["cost_usd"]
    # Nothing ran again: no upstream saw another request.
    assert pair.counts() == counts
    assert len(pair.ok_requests(JOINER_M)) == 1
    assert len(pair.compare_requests()) == 1

