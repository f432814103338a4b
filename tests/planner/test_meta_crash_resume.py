"""A run journalled in Redis survives a gateway crash: a retry with the same Idempotency-Key on a
new gateway process resumes it without paying again for the tasks that had finished."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import redis
import yaml

from gateway.auth import hash_key
from simulator import BackgroundSimulator, RecordedRequest, SimulationSettings
from tests.planner.conftest import (
    CHEAP_M,
    GOAL,
    JOINER_ANSWER,
    JOINER_M,
    META,
    PLANNER_M,
    STRONG_M,
    finish,
    input_blocks,
    meta_config,
    plan_text,
    task,
    user_text,
)
from tests.store.redis_server import started_redis
from tests.support import CLIENT_KEY, ServerProcess, wait_for

KEY = "crash-resume-1"
FAST = ("f1", "f2", "f3")
TASKS = [task("f1"), task("f2"), task("f3"), task("slow", tier="strong"), task("after", ["f1", "slow"])]


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = started_redis(tmp_path / "redis")
    yield server.url
    server.stop()


@pytest.fixture
def sims() -> Iterator[dict[str, BackgroundSimulator]]:
    settings = {
        # Planner and joiner share one upstream; the fast and the slow executor have their own.
        PLANNER_M: SimulationSettings(replies={PLANNER_M: plan_text(TASKS), JOINER_M: finish()}),
        CHEAP_M: SimulationSettings(output_tokens=8),
        # Slow enough that the gateway is killed while it is running.
        STRONG_M: SimulationSettings(output_tokens=8, first_token_ms=60_000),
    }
    started = {model: BackgroundSimulator(s) for model, s in settings.items()}
    for sim in started.values():
        sim.start()
    yield started
    for sim in started.values():
        sim.stop()


@pytest.fixture
def serve(tmp_path: Path, redis_url: str, sims: dict[str, BackgroundSimulator]) -> Iterator[Any]:
    config = {
        "server": {"request_log": False, "shutdown_grace_s": 1},
        "auth": {"keys": [{"name": "test", "hash": hash_key(CLIENT_KEY)}]},
        "providers": {f"up-{m}": {"type": "openai", "base_url": sim.base_url} for m, sim in sims.items()},
        "models": {
            "planner": {"targets": [{"provider": f"up-{PLANNER_M}", "model": PLANNER_M}]},
            "joiner": {"targets": [{"provider": f"up-{PLANNER_M}", "model": JOINER_M}]},
            "cheap": {"targets": [{"provider": f"up-{CHEAP_M}", "model": CHEAP_M}]},
            "strong": {"targets": [{"provider": f"up-{STRONG_M}", "model": STRONG_M}]},
        },
        "store": {"backend": "redis", "url": redis_url},
        "meta_models": {META: meta_config()},
    }
    path = tmp_path / "cutover.yaml"
    path.write_text(yaml.safe_dump(config))
    running: list[ServerProcess] = []

    def start(name: str) -> ServerProcess:
        gateway = ServerProcess.cutover_serve(name, path, log=tmp_path / f"{name}.stderr")
        running.append(gateway)
        gateway.wait_answers("/healthz", timeout=60)
        return gateway

    yield start
    for gateway in running:
        gateway.stop()


def _client(gateway: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.root_url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=60)


def _ask(gateway: ServerProcess) -> Any:
    with _client(gateway) as client:
        return client.chat.completions.create(
            model=META, messages=[{"role": "user", "content": GOAL}], extra_headers={"Idempotency-Key": KEY},
            extra_body={"cutover": {"trace": True}},
        )


def _task_requests(sim: BackgroundSimulator, task_id: str) -> list[RecordedRequest]:
    return [r for r in sim.requests if f"Your step: Do step {task_id} of the report." in user_text(r)]


def test_a_retry_after_a_crash_resumes_the_run_without_redoing_finished_tasks(
    serve: Any, sims: dict[str, BackgroundSimulator], redis_url: str
) -> None:
    brain, fast, slow = sims[PLANNER_M], sims[CHEAP_M], sims[STRONG_M]
    first = serve("gateway-1")
    failure: list[BaseException] = []

    def doomed() -> None:
        try:
            _ask(first)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=doomed, name="doomed-request", daemon=True)
    thread.start()
    journal = redis.Redis.from_url(redis_url)
    tasks_key = f"cutover:run:{META}:test:{KEY}:tasks"
    try:
        # The fast tasks are journalled (written before they count as done) and the slow one is running.
        wait_for(lambda: {k.decode() for k in journal.hkeys(tasks_key)} == set(FAST), timeout=20,
                 what="the fast tasks in the journal")
        wait_for(lambda: len(_task_requests(slow, "slow")) == 1, timeout=20, what="the slow task to start")
        first.kill()  # SIGKILL: no chance to clean up
        thread.join(timeout=20)
        assert isinstance(failure[0], openai.APIConnectionError), failure
        assert journal.hget(f"cutover:run:{META}:test:{KEY}", "status") == b"running"
    finally:
        journal.close()
    for task_id in FAST:
        assert len(_task_requests(fast, task_id)) == 1
    assert _task_requests(fast, "after") == []
    assert len(brain.requests) == 1  # the plan; no joiner yet

    slow.set_settings(SimulationSettings(output_tokens=8))
    second = serve("gateway-2")
    # The new gateway waits until the dead owner's heartbeat is stale (5 s), then takes the run over.
    completion = _ask(second)
    assert completion.choices[0].message.content == JOINER_ANSWER
    assert completion.choices[0].finish_reason == "stop"
    trace = (completion.model_extra or {})["cutover"]["trace"]
    assert {t["id"]: t["status"] for t in trace["tasks"]} == dict.fromkeys([*FAST, "slow", "after"], "ok")
    assert trace["plan_cache_hit"] is True  # the journalled plan, not a new planner call
    assert [c["role"] for c in trace["calls"]] == ["join"]

    # Finished tasks were not requested again; the unfinished ones and the joiner were.
    for task_id in FAST:
        assert len(_task_requests(fast, task_id)) == 1, task_id
    assert len(_task_requests(slow, "slow")) == 2
    (after,) = _task_requests(fast, "after")
    # The resumed task got the journalled result of f1 as its input.
    assert input_blocks(after) == {"f1": "ok", "slow": "ok"}
    assert [r.model for r in brain.requests] == [PLANNER_M, JOINER_M]

    # Done is done: another retry, on yet another gateway, gets the stored answer without upstream calls.
    counts = [len(s.requests) for s in sims.values()]
    second.kill()
    third = serve("gateway-3")
    again = _ask(third)
    assert again.id == completion.id
    assert again.choices[0].message.content == JOINER_ANSWER
    assert [len(s.requests) for s in sims.values()] == counts
