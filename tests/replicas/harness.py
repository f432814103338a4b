"""Several real `cutover serve` processes sharing one migration store.

Plain helpers (fixtures live in conftest.py): the shared config file, starting and
stopping gateway processes, reading their /metrics and admin API, and a background
client that spreads chat completions over the replicas.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from gateway.auth import hash_key
from migration.split import bucket_of
from migration.types import PHASES
from simulator import BackgroundSimulator
from tests.support import CLIENT_KEY, ServerProcess

ADMIN_KEY = "sk-test-admin-replicas"
MIGRATION = "m1"
ALIAS = "gpt-4"
SALT = "replica-salt"
BASELINE_MODEL = "old"
CANDIDATE_MODEL = "new"
SYNC_INTERVAL_S = 0.2
LEASE_TTL_S = 1.5


_local = threading.local()


def http() -> httpx.Client:
    """This thread's client: building one costs tens of milliseconds (TLS context), so it is kept."""
    client: httpx.Client | None = getattr(_local, "client", None)
    if client is None:
        client = _local.client = httpx.Client(timeout=10)
    return client


def hold_for(check: Callable[[], None], *, seconds: float, every: float = 0.05) -> int:
    """Run `check` (which asserts) over and over for `seconds`: a property that must hold throughout a
    period, as opposed to one to wait for. Returns how many times it was checked."""
    end = time.monotonic() + seconds
    checks = 0
    while True:
        check()
        checks += 1
        if time.monotonic() >= end:
            return checks
        time.sleep(every)  # the polling period of the observation, not a wait for anything


# -- the shared config ------------------------------------------------------------------------


def plan(**overrides: Any) -> dict[str, Any]:
    """Short plan timings: steps of `min_step_s`, judged every `interval_s` once both arms have 10 samples."""
    base: dict[str, Any] = {
        "shadow_percent": 0,
        "weights": [50, 60, 70, 80, 100],
        "min_step_s": 1.0,
        "max_step_s": 600.0,
        "min_samples": 10,
        "interval_s": 0.3,
        # At 100 % the baseline arm's only samples are these copies: copying everything keeps them coming.
        "post_promotion_shadow_percent": 100,
        "safety_window_s": 600.0,
    }
    return {**base, **overrides}


def write_config(
    path: Path,
    baseline: BackgroundSimulator,
    candidate: BackgroundSimulator,
    store: dict[str, Any],
    step_plan: dict[str, Any],
    *,
    declared: bool = True,
) -> Path:
    """The cluster's config file; `declared=False` leaves the migration out (for one created over the admin API)."""
    config = {
        "server": {"request_log": False, "shutdown_grace_s": 5},
        "auth": {"keys": [{"name": "test", "hash": hash_key(CLIENT_KEY)}]},
        "admin": {"keys": [{"name": "ops", "hash": hash_key(ADMIN_KEY)}]},
        "providers": {
            "legacy": {"type": "openai", "base_url": baseline.base_url},
            "modern": {"type": "openai", "base_url": candidate.base_url},
        },
        "models": {ALIAS: {"targets": [{"provider": "legacy", "model": BASELINE_MODEL}]}},
        # The candidate is cheaper, so the cost gate passes.
        "prices": {BASELINE_MODEL: {"input": 2, "output": 4}, CANDIDATE_MODEL: {"input": 1, "output": 2}},
        "routing": {"retry": {"initial_backoff_s": 0.01, "max_backoff_s": 0.05, "jitter_s": 0.0}},
        "store": store,
        "controller": {"sync_interval_s": SYNC_INTERVAL_S, "lease_ttl_s": LEASE_TTL_S},
        "migrations": [{
            "id": MIGRATION,
            "alias": ALIAS,
            "baseline": {"provider": "legacy", "model": BASELINE_MODEL},
            "candidate": {"provider": "modern", "model": CANDIDATE_MODEL},
            "plan": step_plan,
            # These tests are about replicas, not statistics: a loose level lets each step show a healthy
            # candidate under its thresholds after ~300 answers instead of ~750. No canary pair copies: the
            # tests count every request each arm served.
            "gates": {"alpha": 0.2, "quality": {"canary_pair_share": 0}},
            "sticky": {"salt": SALT},
        }],
    }
    if not declared:
        del config["migrations"]
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def candidate_users(weight_percent: float, count: int, prefix: str = "probe") -> list[str]:
    """Sticky keys whose bucket puts them on the candidate at `weight_percent`: decisive probes."""
    found: list[str] = []
    n = 0
    while len(found) < count:
        user = f"{prefix}-{n}"
        if bucket_of(SALT, MIGRATION, user) < round(weight_percent * 100):
            found.append(user)
        n += 1
    return found


# -- gateway processes ------------------------------------------------------------------------


# One `cutover serve` process of a cluster; its kill() is a crash: no last sync, the lease is left to expire.
Replica = ServerProcess


def start_replicas(
    config: Path, count: int, workdir: Path, *, workers: int = 1, env: dict[str, str] | None = None
) -> list[Replica]:
    """`count` processes of `cutover serve` on one config, each on its own port; returns once all answer.

    Each process serves its own /metrics unless `env` names a shared PROMETHEUS_MULTIPROC_DIR."""
    # All started before waiting for any, so they import the app side by side.
    replicas = [
        Replica.cutover_serve(f"replica-{index}", config, log=workdir / f"replica-{index}.stderr",
                              args=["--workers", str(workers)], env=env)
        for index in range(count)
    ]
    try:
        for replica in replicas:
            # Importing the whole app in a fresh interpreter is slow on a busy machine.
            replica.wait_answers("/healthz", timeout=60, client=http())
    except BaseException:
        stop_all(replicas)
        raise
    return replicas


def stop_all(replicas: Sequence[Replica]) -> None:
    # All signalled before waiting for any, so their graceful shutdowns overlap.
    for replica in replicas:
        if replica.alive():
            replica.proc.send_signal(signal.SIGTERM)
    for replica in replicas:
        replica.stop(grace_s=15)


# -- reading a replica ------------------------------------------------------------------------


@dataclass(frozen=True)
class Scraped:
    """One /metrics exposition, parsed once (parsing dominates the cost of reading a sample)."""

    samples: tuple[tuple[str, dict[str, str], float], ...]

    @classmethod
    def parse(cls, text: str) -> Scraped:
        return cls(tuple(
            (s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples
        ))

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples named `name` whose labels include `labels`; 0 when none match."""
        return sum(v for n, have, v in self.samples if n == name and all(have.get(k) == x for k, x in labels.items()))

    @property
    def phase(self) -> str | None:
        """The phase this process has applied, from its cutover_migration_phase gauge (not the store)."""
        on = [p for p in PHASES if self.value("cutover_migration_phase", migration=MIGRATION, phase=p) == 1]
        return on[0] if len(on) == 1 else None

    @property
    def weight(self) -> float:
        """The candidate's share of live traffic this process has applied."""
        return self.value("cutover_migration_candidate_weight_ratio", migration=MIGRATION)


def scrape(replica: Replica) -> Scraped:
    response = http().get(f"{replica.root_url}/metrics")
    assert response.status_code == 200, response.text
    return Scraped.parse(response.text)


def gauge(replica: Replica, name: str, **labels: str) -> float:
    return scrape(replica).value(name, **labels)


def admin_headers(if_match: int | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    if if_match is not None:
        headers["If-Match"] = f'"{if_match}"'
    return headers


def get_migration(replica: Replica) -> dict[str, Any]:
    response = http().get(f"{replica.root_url}/admin/migrations/{MIGRATION}", headers=admin_headers())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert response.headers["etag"] == f'"{body["version"]}"'
    return body


def history(replica: Replica) -> list[dict[str, Any]]:
    response = http().get(f"{replica.root_url}/admin/migrations/{MIGRATION}/history", headers=admin_headers())
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def act(replica: Replica, action: str, version: int, reason: str = "") -> httpx.Response:
    return http().post(
        f"{replica.root_url}/admin/migrations/{MIGRATION}/{action}",
        headers=admin_headers(version), json={"reason": reason} if reason else None,
    )


def readyz(replica: Replica) -> httpx.Response:
    return http().get(f"{replica.root_url}/readyz")


def chat(replica: Replica, user: str, content: str, client: httpx.Client | None = None) -> httpx.Response:
    return (client or http()).post(
        f"{replica.root_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        json={"model": ALIAS, "messages": [{"role": "user", "content": content}], "user": user},
        timeout=15,
    )


def served_model(response: httpx.Response) -> str:
    """Which upstream model answered (the gateway's x-cutover-model header)."""
    assert response.status_code == 200, response.text
    return response.headers["x-cutover-model"]


def contents(sim: BackgroundSimulator) -> list[str]:
    """The user message of every chat request the simulator saw."""
    seen = []
    for record in sim.requests:
        body = record.body
        if record.path.endswith("/chat/completions") and isinstance(body, dict):
            seen.append(str(body["messages"][-1]["content"]))
    return seen


def leader_sum(replicas: Sequence[Replica]) -> float:
    return sum(gauge(r, "cutover_controller_leader") for r in replicas)


def leaders(replicas: Sequence[Replica]) -> list[Replica]:
    return [r for r in replicas if gauge(r, "cutover_controller_leader") == 1]


# -- per-worker metrics of one multi-worker process -------------------------------------------


def per_worker_metrics(multiproc_dir: Path, scratch: Path) -> dict[int, Scraped]:
    """Each worker's own metrics, read from its files in the shared multiprocess directory.

    /metrics sums the workers; copying one worker's files apart and collecting those
    shows what that worker alone counted and which migration state it has applied.
    """
    by_pid: dict[int, list[Path]] = {}
    for file in multiproc_dir.glob("*.db"):
        pid = file.stem.rsplit("_", 1)[-1]
        if pid.isdigit():
            by_pid.setdefault(int(pid), []).append(file)
    result: dict[int, Scraped] = {}
    for pid, files in by_pid.items():
        target = scratch / f"worker-{pid}"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for file in files:
            shutil.copyfile(file, target / file.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(target))
        result[pid] = Scraped.parse(generate_latest(registry).decode())
    return result


# -- background traffic -----------------------------------------------------------------------


@dataclass
class Sent:
    replica: str
    user: str
    content: str
    status: int | None
    model: str | None
    error: str | None


@dataclass
class Traffic:
    """One thread sending chat completions round-robin to the live replicas, recording every answer.

    `tag` goes into each message, so simulator records can be matched to the phase of
    the test in which a request was sent. `fresh_connections` opens a new connection per
    request, which spreads requests over the workers sharing one listening socket.
    """

    replicas: list[Replica]
    fresh_connections: bool = False
    tag: str = "warmup"
    # Paced, so that a 2-CPU machine still has time left for the gateways and the simulators.
    per_second: float = 150.0
    sent: list[Sent] = field(default_factory=list)
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _in_flight: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, name="replica-traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            assert not self._thread.is_alive(), "traffic thread did not stop"

    def add(self, replica: Replica) -> None:
        """Start sending to `replica` too (a restarted process)."""
        with self._lock:
            self.replicas = [*self.replicas, replica]

    def drop(self, replica: Replica) -> None:
        """Stop sending to `replica` (before killing it on purpose); returns once none is in flight to it."""
        with self._lock:
            self.replicas = [r for r in self.replicas if r is not replica]
            if not self._lock.wait_for(lambda: self._in_flight != replica.name, timeout=30):
                raise AssertionError(f"a request to {replica.name} did not finish")

    def set_tag(self, tag: str) -> None:
        with self._lock:
            self.tag = tag

    def errors(self) -> list[Sent]:
        with self._lock:
            return [s for s in self.sent if s.status != 200]

    def count(self, tag: str | None = None) -> int:
        with self._lock:
            return sum(1 for s in self.sent if tag is None or s.content.startswith(f"{tag}:"))

    def _run(self) -> None:
        clients: dict[str, httpx.Client] = {}
        n = 0
        next_at = time.monotonic()
        try:
            # The pause between requests sets the pace; stop() cuts it short.
            while not self._stop.wait(max(0.0, next_at - time.monotonic())):
                # Never in a burst to catch up after slow answers.
                next_at = max(next_at, time.monotonic()) + 1 / self.per_second
                with self._lock:
                    targets = list(self.replicas)
                    tag = self.tag
                    if not targets:
                        return
                    replica = targets[n % len(targets)]
                    self._in_flight = replica.name
                n += 1
                user, content = f"user-{n % 997}", f"{tag}: request {n}"
                client = clients.get(replica.name)
                if client is None:
                    # Connection: close makes each request a new connection, which the workers
                    # sharing one listening socket then take turns to accept.
                    client = clients[replica.name] = httpx.Client(
                        headers={"Connection": "close"} if self.fresh_connections else {}
                    )
                try:
                    response = chat(replica, user, content, client)
                    sent = Sent(replica.name, user, content, response.status_code,
                                response.headers.get("x-cutover-model"),
                                None if response.status_code == 200 else response.text[:300])
                except httpx.HTTPError as exc:
                    sent = Sent(replica.name, user, content, None, None, repr(exc))
                with self._lock:
                    self.sent.append(sent)
                    self._in_flight = None
                    self._lock.notify_all()
        finally:
            for client in clients.values():
                client.close()

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- what the `cluster` fixture gives a test ---------------------------------------------------


@dataclass
class Running:
    """What a test gets: its replicas, the two simulators, the config file."""

    replicas: list[Replica]
    baseline: BackgroundSimulator
    candidate: BackgroundSimulator
    config: Path
    workdir: Path


# The `cluster` fixture: cluster(count, *, store, plan, workers=1, env=None) -> Running.
Cluster = Callable[..., Running]
