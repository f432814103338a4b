"""A crashed and restarted gateway never serves a sticky user on an arm the user's bucket does not map to.

The migration is created over the admin API, so the restarted process learns of it only
from the store: until it has read the store it does not know the alias is migrated at
all, and a request answered then would go to the baseline whatever its user's bucket.
The gateway reads the store before it serves (and a request arriving before that waits
for it), on Redis and on SQLite alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from migration.split import bucket_of
from simulator import BackgroundSimulator
from tests.replicas.harness import (
    ALIAS,
    BASELINE_MODEL,
    CANDIDATE_MODEL,
    MIGRATION,
    SALT,
    Replica,
    Traffic,
    admin_headers,
    get_migration,
    http,
    plan,
    start_replicas,
    stop_all,
    write_config,
)
from tests.store.redis_server import started_redis
from tests.support import wait_for

WEIGHT_BP = 5000


def arm_of(user: str) -> str:
    return CANDIDATE_MODEL if bucket_of(SALT, MIGRATION, user) < WEIGHT_BP else BASELINE_MODEL


@pytest.mark.parametrize("backend", ["redis", "sqlite"])
def test_no_request_lands_on_the_wrong_arm_across_a_crash_and_restart(
    backend: str, tmp_path: Path, sims: tuple[BackgroundSimulator, BackgroundSimulator]
) -> None:
    redis = started_redis(tmp_path / "redis", persistent=True) if backend == "redis" else None
    store: dict[str, Any] = (
        {"backend": "redis", "url": redis.url} if redis is not None
        else {"backend": "sqlite", "path": str(tmp_path / "state.sqlite")}
    )
    config = write_config(tmp_path / "cutover.yaml", *sims, store, plan(), declared=False)
    assert "migrations" not in yaml.safe_load(config.read_text())
    replicas: list[Replica] = start_replicas(config, 1, tmp_path)
    try:
        (first,) = replicas
        spec = {
            "id": MIGRATION, "alias": ALIAS, "sticky": {"salt": SALT},
            "baseline": {"provider": "legacy", "model": BASELINE_MODEL},
            "candidate": {"provider": "modern", "model": CANDIDATE_MODEL},
            # Held at its first step, 50 % on the candidate, for the whole test.
            "plan": plan(weights=[50, 100], min_step_s=600, max_step_s=1200),
        }
        created = http().post(f"{first.root_url}/admin/migrations", headers=admin_headers(), json=spec)
        assert created.status_code == 201, created.text
        assert get_migration(first)["state"]["candidate_weight_bp"] == WEIGHT_BP

        with Traffic([first], per_second=100.0) as traffic:
            wait_for(lambda: traffic.count() >= 200, timeout=20, what="traffic before the crash")
            # The new process starts while the old one still runs (they share the store), then the old one
            # is killed: no last sync, nothing released.
            second = Replica.cutover_serve("restarted", config, log=tmp_path / "restarted.stderr")
            replicas.append(second)
            # Traffic goes to the new process from its first moment: every early request is a probe.
            traffic.add(second)
            traffic.drop(first)
            first.kill()
            second.wait_answers("/healthz", timeout=60, client=http())
            wait_for(lambda: sum(s.replica == "restarted" and s.status == 200 for s in traffic.sent) >= 300,
                     timeout=30, what="traffic after the restart")
        answered = [s for s in traffic.sent if s.status == 200]
        wrong = [(s.replica, s.user, s.model) for s in answered if s.model != arm_of(s.user)]
        assert wrong == [], wrong[:10]
        # Both arms really served, before and after: the check above is not vacuous.
        for replica in ("replica-0", "restarted"):
            assert {s.model for s in answered if s.replica == replica} == {BASELINE_MODEL, CANDIDATE_MODEL}
        # Requests the restarted process did not answer were refused while it started, never misrouted.
        assert all(s.status in (None, 503) for s in traffic.sent if s.status != 200), traffic.errors()[:5]
    finally:
        stop_all(replicas)
        if redis is not None:
            redis.stop()


def test_a_process_started_while_the_store_is_down_refuses_rather_than_guesses(
    tmp_path: Path, sims: tuple[BackgroundSimulator, BackgroundSimulator]
) -> None:
    """The sharp case: a restarted process that cannot read Redis at all. Served at once, every user would go
    to the baseline (the process would not know the alias is migrated); it answers 503 until it has read the
    state, then routes every user by its bucket."""
    redis = started_redis(tmp_path / "redis", persistent=True)
    config = write_config(tmp_path / "cutover.yaml", *sims, {"backend": "redis", "url": redis.url}, plan(),
                          declared=False)
    replicas: list[Replica] = start_replicas(config, 1, tmp_path)
    try:
        (first,) = replicas
        spec = {
            "id": MIGRATION, "alias": ALIAS, "sticky": {"salt": SALT},
            "baseline": {"provider": "legacy", "model": BASELINE_MODEL},
            "candidate": {"provider": "modern", "model": CANDIDATE_MODEL},
            "plan": plan(weights=[50, 100], min_step_s=600, max_step_s=1200),
        }
        created = http().post(f"{first.root_url}/admin/migrations", headers=admin_headers(), json=spec)
        assert created.status_code == 201, created.text
        first.kill()
        redis.kill()
        second = Replica.cutover_serve("restarted", config, log=tmp_path / "restarted.stderr")
        replicas.append(second)
        second.wait_answers("/healthz", timeout=60, client=http())
        with Traffic([second], per_second=50.0) as traffic:
            wait_for(lambda: any(s.status == 503 for s in traffic.sent), timeout=20, what="a 503 while Redis is down")
            redis.start()
            wait_for(lambda: sum(s.status == 200 for s in traffic.sent) >= 200, timeout=30,
                     what="answers once Redis is back")
        answered = [s for s in traffic.sent if s.status == 200]
        assert [(s.user, s.model) for s in answered if s.model != arm_of(s.user)] == []
        assert {s.model for s in answered} == {BASELINE_MODEL, CANDIDATE_MODEL}
        refused = [s for s in traffic.sent if s.status == 503]
        assert refused and all("migration state" in (s.error or "") for s in refused), refused[:3]
    finally:
        stop_all(replicas)
        redis.stop()
