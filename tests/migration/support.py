"""Helpers for the migration tests.

A `Stack` is one gateway in front of two simulators: `baseline` (provider
"legacy", model "old") and `candidate` (provider "modern", model "new"), with an
httpx client on the admin API. `Traffic` drives client requests through the
official SDK from background threads until stopped, so a test can wait for a
migration to reach a phase while traffic keeps flowing. Which simulator served a
request is read from its recordings; shadow copies carry a request id ending in
"-shadow", so primaries and copies can be told apart.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx
import openai

from gateway.auth import hash_key
from migration.live import LiveMigrations
from migration.rollout import MigrationState
from migration.sync import StoreSync
from simulator import BackgroundSimulator, RecordedRequest
from tests.gateway.helpers import scrape, sdk
from tests.support import BackgroundGateway, wait_for

ADMIN_KEY = "sk-admin-migration-tests"
ADMIN_NAME = "ops"
MIGRATION_ID = "m1"
ALIAS = "gpt-4"
BASELINE = {"provider": "legacy", "model": "old"}
CANDIDATE = {"provider": "modern", "model": "new"}
SALT = "migration-tests"
HI = [{"role": "user", "content": "hi"}]


def admin_section() -> dict[str, Any]:
    return {"keys": [{"name": ADMIN_NAME, "hash": hash_key(ADMIN_KEY)}]}


def fast_plan(**overrides: Any) -> dict[str, Any]:
    """A plan that walks a step in well under a second at the traffic these tests send."""
    plan: dict[str, Any] = {
        "shadow_percent": 50.0,
        "weights": [25, 50, 75, 100],
        "min_step_s": 0.5,
        "max_step_s": 60.0,
        "min_samples": 20,
        "interval_s": 0.2,
        "consecutive_failures": 2,
        "post_promotion_shadow_percent": 50.0,
        "safety_window_s": 1.0,
    }
    plan.update(overrides)
    return plan


def held_plan(**overrides: Any) -> dict[str, Any]:
    """A plan the controller never advances by itself: steps are moved by hand."""
    return fast_plan(**{"shadow_percent": 0.0, "min_step_s": 600.0, "max_step_s": 1200.0, **overrides})


def migration_spec(
    *,
    migration_id: str = MIGRATION_ID,
    alias: str = ALIAS,
    plan: dict[str, Any] | None = None,
    gates: dict[str, Any] | None = None,
    shadow: dict[str, Any] | None = None,
    candidate: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "id": migration_id,
        "alias": alias,
        "baseline": dict(BASELINE),
        "candidate": dict(candidate or CANDIDATE),
        "plan": plan if plan is not None else fast_plan(),
        "sticky": {"salt": SALT},
    }
    # A looser level than the default 0.005 lets a healthy candidate show it is under every threshold after a
    # few hundred answers per step instead of about 750, which keeps these tests to seconds.
    spec["gates"] = {"alpha": 0.05, **(gates or {})}
    if shadow is not None:
        spec["shadow"] = shadow
    return spec


def admin_client(gw: BackgroundGateway, key: str | None = ADMIN_KEY) -> httpx.Client:
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.Client(base_url=gw.root_url, headers=headers, timeout=10.0)


def is_shadow(record: RecordedRequest) -> bool:
    return (record.request_id or "").endswith("-shadow")


def primaries(sim: BackgroundSimulator, since: float = 0.0) -> list[RecordedRequest]:
    """Client requests the simulator served (shadow copies left out), received at or after `since`."""
    return [r for r in sim.requests if not is_shadow(r) and r.started_at >= since]


def shadows(sim: BackgroundSimulator) -> list[RecordedRequest]:
    return [r for r in sim.requests if is_shadow(r)]


def users_of(records: Iterable[RecordedRequest]) -> list[str]:
    return [str(r.body.get("user")) for r in records if isinstance(r.body, dict)]


def content_of(response: Any) -> str:
    return str(response.choices[0].message.content)


def stream_content(stream: Iterable[Any]) -> str:
    parts = []
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                parts.append(choice.delta.content)
    return "".join(parts)


def p50(values: list[float]) -> float:
    return statistics.median(values)


@dataclass
class Stack:
    gw: BackgroundGateway
    baseline: BackgroundSimulator
    candidate: BackgroundSimulator
    migration_id: str = MIGRATION_ID
    admin: httpx.Client = field(init=False)
    _client: openai.OpenAI | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.admin = admin_client(self.gw)

    def close(self) -> None:
        self.admin.close()
        if self._client is not None:
            self._client.close()

    @property
    def client(self) -> openai.OpenAI:
        """One SDK client for the test's own thread (building one costs tens of milliseconds)."""
        if self._client is None:
            self._client = sdk(self.gw)
        return self._client

    # -- the admin API ----------------------------------------------------------------

    def describe(self, migration_id: str | None = None) -> dict[str, Any]:
        response = self.admin.get(f"/admin/migrations/{migration_id or self.migration_id}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def state(self, migration_id: str | None = None) -> dict[str, Any]:
        state: dict[str, Any] = self.describe(migration_id)["state"]
        return state

    def history(self, migration_id: str | None = None) -> list[dict[str, Any]]:
        response = self.admin.get(f"/admin/migrations/{migration_id or self.migration_id}/history")
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = response.json()["data"]
        return entries

    def ticks(self, migration_id: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.history(migration_id) if e["kind"] == "tick"]

    def transitions(self, migration_id: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.history(migration_id) if e["kind"] == "transition"]

    def act(
        self, action: str, *, if_match: int | str | None = None, migration_id: str | None = None, **body: Any
    ) -> httpx.Response:
        """POST an action with the migration's current version as If-Match (unless one is given)."""
        mid = migration_id or self.migration_id
        version = if_match if if_match is not None else self.describe(mid)["version"]
        return self.admin.post(f"/admin/migrations/{mid}/{action}", json=body, headers={"if-match": f'"{version}"'})

    def act_ok(self, action: str, **body: Any) -> dict[str, Any]:
        response = self.act(action, **body)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def kill_switch(self, enabled: bool, alias: str = ALIAS) -> None:
        response = self.admin.put(f"/admin/aliases/{alias}/kill-switch", json={"enabled": enabled})
        assert response.status_code == 200, response.text
        assert response.json() == {"alias": alias, "kill_switch": enabled}

    def metrics(self) -> str:
        return scrape(self.gw.root_url)

    # -- in-process views (cheap to poll) ------------------------------------------------

    @property
    def live(self) -> LiveMigrations:
        assert self.gw.app is not None
        return self.gw.app.parts.migrations.live

    @property
    def sync(self) -> StoreSync:
        assert self.gw.app is not None
        return self.gw.app.parts.migrations.sync

    def local_state(self, migration_id: str | None = None) -> MigrationState | None:
        found = self.live.migrations().get(migration_id or self.migration_id)
        return None if found is None else found[1]

    def wait_for(self, phase: str, *, step: int | None = None, settled: bool = False, timeout: float = 20.0) -> None:
        """Poll this process's adopted state until the migration is in `phase` (and `step`)."""

        def there() -> bool:
            state = self.local_state()
            return (
                state is not None
                and state.phase == phase
                and (step is None or state.step_index == step)
                and (not settled or state.settled)
            )

        what = f"phase {phase}" + ("" if step is None else f" step {step}") + (" settled" if settled else "")
        try:
            wait_for(there, timeout=timeout, what=what)
        except AssertionError as exc:
            # The state at the deadline, not the one before waiting, is what explains a timeout.
            raise AssertionError(f"{exc} (now {self.local_state()})") from None

    def wait_rounds(self, seconds: float) -> None:
        """Let the controller run rounds covering `seconds` from now, the last one finished.

        The horizon for negative checks ("nothing happened"): it polls the controller's
        progress instead of sleeping a guessed time."""
        sync = self.sync
        horizon = time.time() + seconds
        wait_for(lambda: (sync.last_sync_at or 0.0) > horizon, timeout=seconds + 10, what="controller rounds")
        seen = sync.last_sync_at
        # Analysis follows the sync in the same round: one more sync means that round is over.
        wait_for(lambda: sync.last_sync_at != seen, timeout=10, what="one more controller round")

    # -- client traffic --------------------------------------------------------------------

    def chat(self, user: str, *, model: str = ALIAS, stream: bool = False, **kwargs: Any) -> str:
        completions = self.client.chat.completions
        if stream:
            return stream_content(completions.create(model=model, messages=HI, user=user, stream=True, **kwargs))
        return content_of(completions.create(model=model, messages=HI, user=user, **kwargs))

    def send_users(self, users: Iterable[str], *, model: str = ALIAS) -> list[str]:
        return [self.chat(user, model=model) for user in users]

    def arms_of(self, since: float) -> dict[str, str]:
        """user -> 'baseline' or 'candidate', from which simulator served its primary request since `since`.

        Fails when a user was served by both, which would break stickiness."""
        arms: dict[str, str] = {}
        for arm, sim in (("baseline", self.baseline), ("candidate", self.candidate)):
            for user in users_of(primaries(sim, since)):
                assert arms.setdefault(user, arm) == arm, f"user {user} served by both arms"
        return arms


@dataclass(frozen=True, slots=True)
class Reply:
    user: str
    status: int
    content: str | None
    latency_s: float


class Traffic:
    """Client requests through the OpenAI SDK from `workers` threads until stopped.

    Each request names a fresh user (`prefix` + a counter) unless `users` bounds
    the pool, in which case users are reused round-robin. Every answer is kept:
    status 200 with its content, the HTTP status of an API error, or 0 when the
    connection itself failed.
    """

    def __init__(
        self,
        gw: BackgroundGateway,
        *,
        workers: int = 4,
        prefix: str = "u",
        users: int | None = None,
        model: str = ALIAS,
        **create_kwargs: Any,
    ) -> None:
        self._gw = gw
        self._workers = workers
        self._prefix = prefix
        self._users = users
        self._model = model
        self._kwargs = create_kwargs
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.replies: list[Reply] = []

    def _next_user(self) -> str:
        with self._lock:
            n = next(self._counter)
        return f"{self._prefix}{n if self._users is None else n % self._users}"

    def _run(self) -> None:
        client = sdk(self._gw, timeout=30.0)
        try:
            while not self._stop.is_set():
                user = self._next_user()
                started = time.perf_counter()
                status, content = 200, None
                try:
                    response = client.chat.completions.create(
                        model=self._model, messages=HI, user=user, **self._kwargs
                    )
                    content = content_of(response)
                except openai.APIStatusError as exc:
                    status = exc.status_code
                except openai.APIConnectionError:
                    status = 0
                reply = Reply(user, status, content, time.perf_counter() - started)
                with self._lock:
                    self.replies.append(reply)
        finally:
            client.close()

    def start(self) -> Traffic:
        for _ in range(self._workers):
            thread = threading.Thread(target=self._run, name="migration-traffic", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def statuses(self) -> Counter[int]:
        with self._lock:
            return Counter(r.status for r in self.replies)

    def count(self) -> int:
        with self._lock:
            return len(self.replies)
