"""The live scenario behind the dashboard tests.

`cutover serve --workers 2` runs as a subprocess in front of simulated upstreams
(BackgroundSimulators on loopback ports, so the test can degrade them), with:

* migration m1 (alias gpt-4, legacy -> modern) declared in the config with a plan
  in seconds: shadow 50 % (a one-copy shadow pool, so copies are also dropped),
  then canary 50 % -> 100 %; its quality gates have a judge (alias judge, whose
  simulated model always answers "tie") sampling every compared pair, with a noise
  floor; the clients' requests to gpt-4 ask for JSON, offer a tool (not judged:
  exclude_tools) or set a token limit that cuts the answer off, beside plain ones;
* alias chat = [flaky, backup]: the flaky target fails 40 % of attempts, so there
  are retries, fallbacks and cool-downs while clients still get answers;
* alias stream: streams that break after their first byte;
* alias small: a tiny context window with truncate_oldest;
* two plan-and-execute meta-models: `plan-and-execute` (plan cache on, a strong and
  cheap tier) and `pe-replan`, whose joiner always asks for a re-plan; its planner
  target answers its 2nd and 3rd requests with 500s, so the first re-plan falls back
  to a second target with a different plan (a real re-plan, then stop reason
  max_replans); later runs get the first plan again, which reuses finished task ids
  (stop reason replan_invalid).

`Traffic` drives clients from background threads; `Prometheus` runs the real
server scraping the gateway every second with the shipped alert rules loaded.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from gateway.auth import hash_key
from simulator import BackgroundSimulator, SimulationSettings
from tests.support import CLIENT_KEY, ServerProcess, free_port

ADMIN_KEY = "sk-admin-dashboards"
MIGRATION_ID = "m1"

PE_PLAN = {
    "tasks": [
        {"id": "t0", "instruction": "List the refund rules for damaged items", "deps": [], "tier": "cheap",
         "max_tokens": 40},
        {"id": "t1", "instruction": "List the refund rules for late deliveries", "deps": [], "tier": "cheap",
         "max_tokens": 40},
        {"id": "t2", "instruction": "Check the rules against consumer law", "deps": ["t0", "t1"], "tier": "strong",
         "max_tokens": 40},
        {"id": "t3", "instruction": "Write the customer summary", "deps": ["t2"], "tier": "cheap", "max_tokens": 40},
    ],
    "final_instruction": "Answer with the customer summary.",
}
REPLAN_A = {
    "tasks": [
        {"id": "a0", "instruction": "Draft the opening paragraph about pricing", "deps": [], "tier": "cheap",
         "max_tokens": 30},
        {"id": "a1", "instruction": "Draft the closing paragraph about support", "deps": ["a0"], "tier": "cheap",
         "max_tokens": 30},
    ],
    "final_instruction": "Join the paragraphs.",
}
REPLAN_B = {
    "tasks": [
        {"id": "b0", "instruction": "Verify every figure quoted in the draft", "deps": [], "tier": "cheap",
         "max_tokens": 30},
        {"id": "b1", "instruction": "Rewrite the contradicting sentences", "deps": ["b0"], "tier": "cheap",
         "max_tokens": 30},
    ],
    "final_instruction": "Give the corrected text.",
}
# A plan that looks a rule up with the client's own tool, then explains it.
TOOL_PLAN = {
    "tasks": [
        {"id": "r0", "tool": "lookup_refund_rule", "arguments": {"case": "damaged"}, "deps": []},
        {"id": "r1", "instruction": "Explain the refund rule to the customer", "deps": ["r0"], "tier": "cheap",
         "max_tokens": 30},
    ],
    "final_instruction": "Answer with the explanation.",
}
JOIN_FINISH = {"action": "finish", "answer": "Refunds are granted for damaged items and late deliveries."}
JOIN_REPLAN = {"action": "replan", "feedback": "The paragraphs contradict each other; verify and rewrite them."}
PE_PROMPT = ("Our refund policy has separate rules for damaged items and for late deliveries. Work out what applies "
             "in each case, check it against consumer law, and write a short summary for customers.")
REPLAN_PROMPT = ("Write a two paragraph product note: one paragraph about pricing and one about support. "
                 "Make sure every figure is right and nothing contradicts.")
LONG_HISTORY = " ".join(["This is an old part of the conversation that no longer matters."] * 40)

# Shadow 50 % while the step lasts at least 5 s, then canary 50 % and 100 %; one failed check rolls back.
PLAN = {
    "shadow_percent": 50, "weights": [50, 100], "min_step_s": 5, "max_step_s": 120, "min_samples": 15,
    "interval_s": 0.5, "consecutive_failures": 1, "post_promotion_shadow_percent": 20, "safety_window_s": 120,
}
BROKEN = {"error_rate": 1.0, "error_kinds": {"server_error": 1.0}}
# A candidate that answers everything with the same prose: requests asking for JSON get invalid JSON.
PROSE_ONLY = {"reply": "Sorry, I can only answer in prose."}
# The judge's verdict on every pair, in either order: a tie.
JUDGE_TIE = json.dumps({"winner": "tie", "reason": "Both answers serve the request equally well."})
REFUND_TOOL = {"type": "function", "function": {
    "name": "lookup_refund_rule", "description": "The refund rule for a case.",
    "parameters": {"type": "object", "properties": {"case": {"type": "string", "enum": ["damaged", "late"]}},
                   "required": ["case"], "additionalProperties": False}}}


# The sampling period of the scenario's observations: each costs the gateway or Prometheus real
# work (a scrape of two workers, an API query) on a machine already busy with the client traffic.
POLL_S = 0.2


class Sims:
    """The simulated upstreams, in this process so the test can change their behaviour."""

    SETTINGS: dict[str, dict[str, Any]] = {
        "legacy": {"first_token_ms": 20, "per_token_ms": 2, "output_tokens": 8},
        "modern": {"first_token_ms": 30, "per_token_ms": 1, "output_tokens": 8},
        "flaky": {"first_token_ms": 5, "output_tokens": 8, "error_rate": 0.4,
                  "error_kinds": {"server_error": 1.0}},
        "backup": {"first_token_ms": 10, "output_tokens": 8},
        "breaky": {"first_token_ms": 5, "per_token_ms": 2, "output_tokens": 12, "error_rate": 0.5,
                   "error_kinds": {"stream_break": 1.0}},
        "pe": {"first_token_ms": 10, "output_tokens": 12, "replies": {
            "planner-m": json.dumps(PE_PLAN), "joiner-m": json.dumps(JOIN_FINISH),
            "plan-b": json.dumps(REPLAN_B), "joiner-replan": json.dumps(JOIN_REPLAN),
            "tool-planner-m": json.dumps(TOOL_PLAN)}},
        "plans": {"first_token_ms": 10, "replies": {"plan-a": json.dumps(REPLAN_A)},
                  "script": ["ok", "server_error", "server_error"]},
        "judge": {"first_token_ms": 5, "replies": {"judge-m": JUDGE_TIE}},
    }

    def __init__(self) -> None:
        self.sims: dict[str, BackgroundSimulator] = {}

    def start(self) -> None:
        for name, settings in self.SETTINGS.items():
            sim = BackgroundSimulator(SimulationSettings(**settings, record=False, seed=7))
            sim.start()
            self.sims[name] = sim

    def stop(self) -> None:
        for sim in self.sims.values():
            sim.stop()

    def url(self, name: str) -> str:
        return self.sims[name].base_url

    def degrade(self, name: str, **changes: Any) -> None:
        sim = self.sims[name]
        sim.set_settings(sim.settings.model_copy(update=changes))


def gateway_config(sims: Sims, state_path: Path) -> dict[str, Any]:
    def target(provider: str, model: str) -> dict[str, str]:
        return {"provider": provider, "model": model}

    return {
        "server": {"request_log": False, "shutdown_grace_s": 5},
        "auth": {"keys": [{"name": "test", "hash": hash_key(CLIENT_KEY)}]},
        "admin": {"keys": [{"name": "ops", "hash": hash_key(ADMIN_KEY)}]},
        "providers": {name: {"type": "openai", "base_url": sims.url(name)} for name in Sims.SETTINGS},
        "models": {
            # A sample kept for the pre-flight replay the scenario runs once the migration has rolled back.
            "gpt-4": {"targets": [target("legacy", "legacy-large")],
                      "capture": {"sample": 0.2, "max_requests": 100, "exclude_tools": True}},
            "chat": {"targets": [target("flaky", "flaky-m"), target("backup", "backup-m")]},
            "stream": {"targets": [target("breaky", "breaky-m")]},
            "small": {"targets": [target("backup", "backup-small")], "on_context_overflow": "truncate_oldest"},
            "strong": {"targets": [target("pe", "planner-m")]},
            "joiner": {"targets": [target("pe", "joiner-m")]},
            "cheap": {"targets": [target("pe", "cheap-m")]},
            "replanner": {"targets": [target("plans", "plan-a"), target("pe", "plan-b")]},
            "joiner-replan": {"targets": [target("pe", "joiner-replan")]},
            "tool-planner": {"targets": [target("pe", "tool-planner-m")]},
            "judge": {"targets": [target("judge", "judge-m")]},
        },
        "prices": {
            "legacy-large": {"input": 10, "output": 30},
            "modern-large": {"input": 2, "output": 8},
            "flaky-m": {"input": 1, "output": 2},
            "backup-m": {"input": 3, "output": 6},
            "breaky-m": {"input": 1, "output": 2},
            "backup-small": {"input": 1, "output": 2, "context_window": 200},
            "planner-m": {"input": 10, "output": 30},
            "joiner-m": {"input": 10, "output": 30},
            "cheap-m": {"input": 0.1, "output": 0.4},
            "plan-a": {"input": 10, "output": 30},
            "plan-b": {"input": 10, "output": 30},
            "joiner-replan": {"input": 10, "output": 30},
            "tool-planner-m": {"input": 10, "output": 30},
            "judge-m": {"input": 1, "output": 4},
        },
        "routing": {
            "retry": {"max_attempts_per_target": 2, "initial_backoff_s": 0.01, "max_backoff_s": 0.05,
                      "jitter_s": 0.0},
            "circuit_breaker": {"failure_threshold": 3, "cooldown_s": 1.0},
        },
        "store": {"backend": "sqlite", "path": str(state_path)},
        "controller": {"sync_interval_s": 0.2, "lease_ttl_s": 3},
        "migrations": [{
            "id": MIGRATION_ID, "alias": "gpt-4",
            "baseline": target("legacy", "legacy-large"), "candidate": target("modern", "modern-large"),
            "sticky": {"salt": "dashboards"}, "plan": PLAN,
            # Latency gates a loaded CI machine could trip are relaxed. A loose level lets each step pass after
            # a few hundred answers, and a few judged pairs pass the win-rate gate (these tests are about the
            # panels). The judge is offered every compared pair (two at most at a time: more are dropped as busy),
            # half of them with a noise-floor pair; requests offering tools are not judged (dropped, excluded).
            "gates": {"p99_ms": 10_000, "ttft_p99_ms": 10_000, "alpha": 0.2, "quality": {
                "judge": "judge", "sample": 1.0, "max_concurrency": 2, "min_judged": 5, "noise_share": 0.5,
                "min_noise_pairs": 1, "canary_pair_share": 0.5, "exclude_tools": True, "max_usd_per_hour": 10.0}},
            "shadow": {"timeout_s": 5, "max_concurrency": 1},
        }],
        "meta_models": {
            "plan-and-execute": {
                "planner": "strong", "joiner": "joiner", "executors": {"cheap": "cheap", "strong": "strong"},
                "fast_path": {"enabled": False}, "cache": {"enabled": True},
            },
            "pe-tools": {
                "planner": "tool-planner", "joiner": "joiner", "executors": {"cheap": "cheap"},
                "fast_path": {"enabled": False},
            },
            "pe-replan": {
                "planner": "replanner", "joiner": "joiner-replan", "executors": {"cheap": "cheap"},
                "fast_path": {"enabled": False}, "caps": {"max_replans": 1},
            },
        },
    }



class Gateway(ServerProcess):
    """`cutover serve --workers 2` on the scenario's config."""

    @classmethod
    def launch(cls, config_path: Path, log: Path) -> Gateway:
        return cls.cutover_serve("cutover serve", config_path, log=log,
                                 args=["--host", "127.0.0.1", "--workers", "2"])

    def metrics(self) -> str:
        response = httpx.get(f"{self.root_url}/metrics", timeout=10, headers={"Connection": "close"})
        response.raise_for_status()
        return response.text

    def migration_state(self) -> dict[str, Any]:
        response = httpx.get(f"{self.root_url}/admin/migrations/{MIGRATION_ID}", timeout=5,
                             headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        response.raise_for_status()
        state: dict[str, Any] = response.json()["state"]
        return state

    def replay(self, limit: int) -> dict[str, Any]:
        response = httpx.post(f"{self.root_url}/admin/migrations/{MIGRATION_ID}/replay", timeout=120,
                              json={"limit": limit, "concurrency": 2},
                              headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def stop(self, grace_s: float = 20.0) -> None:
        super().stop(grace_s)


@dataclass
class Prometheus(ServerProcess):
    """A real Prometheus server on loopback, with its own TSDB in a temporary directory."""

    client: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.root_url, timeout=10)

    @classmethod
    def launch(cls, workdir: Path, target: str, rules: Path) -> Prometheus:
        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "cutover", "static_configs": [{"targets": [target]}]}],
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        binary = shutil.which("prometheus")
        assert binary is not None
        return cls.start(
            "prometheus",
            [binary, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            port=port, log=workdir / "prometheus.log", cwd=workdir, with_stdout=True,
        )

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; the `data` of a success, AssertionError with Prometheus's own error otherwise."""
        response = self.client.get(f"/api/v1/{path}", params=params)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def firing(self) -> set[tuple[str, str]]:
        """(alertname, the alert's alias or migration label) of every firing alert."""
        return {
            (a["labels"]["alertname"], a["labels"].get("alias") or a["labels"].get("migration", ""))
            for a in self.api("alerts")["alerts"] if a["state"] == "firing"
        }

    def target_up(self) -> bool:
        active = self.api("targets")["activeTargets"]
        return any(t["health"] == "up" for t in active)

    def stop(self, grace_s: float = 10.0) -> None:
        self.client.close()
        super().stop(grace_s)


def rules_for_test(shipped: Path, out: Path) -> Path:
    """The shipped rules with every `for:` set to 0s, so an alert fires at its first true evaluation."""
    text = re.sub(r"(?m)^(\s*)for:\s*\S+\s*$", r"\g<1>for: 0s", shipped.read_text())
    out.write_text(text)
    return out


class Traffic:
    """Client requests from background threads until stopped; counts answers by kind and status."""

    def __init__(self, base_url: str) -> None:
        self._base = base_url
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.answers: Counter[str] = Counter()
        self.failures: list[str] = []

    def _note(self, what: str) -> None:
        with self._lock:
            self.answers[what] += 1

    def _client(self) -> httpx.Client:
        # Connection: close spreads requests over both workers instead of pinning a keep-alive socket.
        return httpx.Client(base_url=self._base, timeout=30,
                            headers={"Authorization": f"Bearer {CLIENT_KEY}", "Connection": "close"})

    def _post(self, client: httpx.Client, tag: str, body: dict[str, Any]) -> None:
        try:
            if body.get("stream"):
                with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    for _ in response.iter_bytes():
                        pass
            else:
                response = client.post("/v1/chat/completions", json=body)
            self._note(f"{tag} {response.status_code}")
        except httpx.HTTPError as exc:
            self._note(f"{tag} {type(exc).__name__}")

    def _loop(self, name: str, step: Callable[[httpx.Client, random.Random, int], None], pause_s: float) -> None:
        rng = random.Random(name)
        n = 0
        with self._client() as client:
            while not self._stop.is_set():
                n += 1
                try:
                    step(client, rng, n)
                except Exception as exc:
                    with self._lock:
                        self.failures.append(f"{name}: {exc!r}")
                # Pacing, not synchronisation: leaves CPU for the gateway and the simulators.
                self._stop.wait(pause_s)

    def _migrated(self, client: httpx.Client, rng: random.Random, n: int) -> None:
        # Half are streams: the ttft gate needs a few hundred of them before the shadow step may pass.
        body: dict[str, Any] = {
            "model": "gpt-4", "user": f"user-{rng.randrange(10_000)}", "stream": rng.random() < 0.5,
            "max_tokens": 16, "messages": [{"role": "user", "content": "Summarise our refund policy."}],
        }
        # The quality checks' cases: JSON asked for, a tool offered, an answer cut off at its token limit.
        if n % 3 == 1:
            body["response_format"] = {"type": "json_object"}
            body["messages"] = [{"role": "user", "content": "Our refund policy as a JSON object, please."}]
        elif n % 6 == 2:
            body["tools"] = [REFUND_TOOL]
        elif n % 6 == 3:
            body["max_tokens"] = 3
        self._post(client, "gpt-4", body)

    def _resilience(self, client: httpx.Client, rng: random.Random, n: int) -> None:
        if n % 10 == 0:
            self._post(client, "stream", {"model": "stream", "stream": True,
                                          "messages": [{"role": "user", "content": "Tell me a story."}]})
        elif n % 10 == 5:
            self._post(client, "small", {"model": "small", "max_tokens": 16, "messages": [
                {"role": "user", "content": LONG_HISTORY},
                {"role": "assistant", "content": "Noted."},
                {"role": "user", "content": "What did I just say?"}]})
        else:
            self._post(client, "chat", {"model": "chat", "stream": rng.random() < 0.3,
                                        "messages": [{"role": "user", "content": "Hello there."}]})

    def _tool_loop(self, client: httpx.Client) -> None:
        """A run whose plan calls the client's tool: the calls come back, the results go in the next request."""
        messages: list[dict[str, Any]] = [{"role": "user", "content": "What is the refund rule for damaged items?"}]
        for _ in range(3):
            try:
                response = client.post("/v1/chat/completions", json={
                    "model": "pe-tools", "messages": messages, "tools": [REFUND_TOOL]})
            except httpx.HTTPError as exc:
                self._note(f"pe-tools {type(exc).__name__}")
                return
            self._note(f"pe-tools {response.status_code}")
            choice = response.json()["choices"][0] if response.status_code == 200 else None
            if choice is None or choice["finish_reason"] != "tool_calls":
                return
            messages.append(choice["message"])
            messages += [{"role": "tool", "tool_call_id": call["id"], "content": "Full refund within 30 days."}
                         for call in choice["message"]["tool_calls"]]

    def _plan_and_execute(self, client: httpx.Client, rng: random.Random, n: int) -> None:
        # The first pe-replan run must be the only one on its planner target (whose script it relies on).
        if n % 8 == 3:
            self._tool_loop(client)
        elif n % 4 == 1:
            self._post(client, "pe-replan", {"model": "pe-replan",
                                             "messages": [{"role": "user", "content": REPLAN_PROMPT}]})
        else:
            self._post(client, "plan-and-execute", {"model": "plan-and-execute", "stream": n % 2 == 0,
                                                    "messages": [{"role": "user", "content": PE_PROMPT}]})

    def start(self) -> None:
        loops = [("migrated-1", self._migrated, 0.01), ("migrated-2", self._migrated, 0.01),
                 ("resilience", self._resilience, 0.01), ("plan-and-execute", self._plan_and_execute, 0.05)]
        for name, step, pause in loops:
            thread = threading.Thread(target=self._loop, args=(name, step, pause), name=f"traffic-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


@contextmanager
def running(workdir: Path, shipped_rules: Path) -> Iterator[tuple[Sims, Gateway, Prometheus, Traffic]]:
    """Simulators, the gateway, Prometheus and client traffic, all stopped on exit."""
    sims = Sims()
    sims.start()
    gateway = prometheus = traffic = None
    try:
        config_path = workdir / "cutover.yaml"
        config_path.write_text(yaml.safe_dump(gateway_config(sims, workdir / "state.sqlite")))
        gateway = Gateway.launch(config_path, workdir / "cutover.log")
        prom_dir = workdir / "prometheus"
        prom_dir.mkdir()
        prometheus = Prometheus.launch(prom_dir, f"127.0.0.1:{gateway.port}",
                                       rules_for_test(shipped_rules, prom_dir / "alerts.yml"))
        # Spawning the workers imports the whole app in each: slow on a busy machine.
        gateway.wait_answers("/readyz", timeout=60, every=POLL_S)
        prometheus.wait_answers("/-/ready", timeout=30, client=prometheus.client, every=POLL_S)
        traffic = Traffic(gateway.root_url)
        traffic.start()
        yield sims, gateway, prometheus, traffic
    finally:
        if traffic is not None:
            traffic.stop()
        if prometheus is not None:
            prometheus.stop()
        if gateway is not None:
            gateway.stop()
        sims.stop()
