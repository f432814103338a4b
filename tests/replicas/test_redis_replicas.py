"""Several `cutover serve` processes on one Redis store, driving one migration of `gpt-4`.

Each process syncs with the store every 0.2 s; one holds the controller lease (1.5 s)
and ticks the gates. These tests kill processes and Redis for real and watch what the
others do, through their /metrics, /readyz, admin API and the simulators' records.

Note on evidence: GET /admin/migrations/{id} reads the store, so any replica shows a
new state the moment it is committed, whether or not that replica has applied it. What a
replica has applied is seen in its own cutover_migration_phase / _candidate_weight_ratio
gauges and, decisively, in where the traffic it serves goes.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx

from tests.replicas.harness import (
    BASELINE_MODEL,
    CANDIDATE_MODEL,
    LEASE_TTL_S,
    MIGRATION,
    Cluster,
    Replica,
    Traffic,
    act,
    admin_headers,
    candidate_users,
    chat,
    contents,
    gauge,
    get_migration,
    history,
    hold_for,
    http,
    leader_sum,
    leaders,
    plan,
    readyz,
    scrape,
    served_model,
)
from tests.store.redis_server import RedisServer
from tests.support import wait_for

_RANK = {"shadow": 0, "canary": 1, "promoted": 2}
# A step held for ten minutes: the migration sits still in its first canary step (50 %).
HOLD = plan(weights=[50, 100], min_step_s=600, max_step_s=1200)


def progress(state: dict[str, Any]) -> tuple[int, int]:
    """How far a running migration has come; fails on a phase that is not running forward."""
    assert state["phase"] in _RANK, f"migration is {state['phase']}: {state['reason']}"
    return _RANK[state["phase"]], state["step_index"]


def stored(replica: Replica) -> dict[str, Any]:
    state: dict[str, Any] = get_migration(replica)["state"]
    return state


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def wait_all_applied(replicas: list[Replica], phase: str, timeout: float = 10) -> None:
    wait_for(lambda: all(scrape(r).phase == phase for r in replicas), timeout=timeout,
             what=f"every replica to apply phase {phase}")


def test_one_leader_at_a_time_and_a_survivor_takes_over_when_it_dies_or_stops(
    redis_server: RedisServer, cluster: Cluster
) -> None:
    # Ten short steps, each with at least half the traffic so its gates have their answers within seconds:
    # whenever the leader is killed, there is a next step left to take.
    running = cluster(3, store={"backend": "redis", "url": redis_server.url},
                      plan=plan(weights=[50, 55, 60, 65, 70, 75, 80, 85, 90, 100]))
    replicas = running.replicas
    with Traffic(list(replicas)) as traffic:
        # Settled: exactly one process holds the lease, and stays the only one.
        wait_for(lambda: leader_sum(replicas) == 1, timeout=10, what="exactly one controller leader")
        for _ in range(10):
            assert leader_sum(replicas) == 1
        (leader,) = leaders(replicas)
        survivors = [r for r in replicas if r is not leader]
        assert [readyz(r).json()["controller_leader"] for r in replicas] == [r is leader for r in replicas]

        # The first leader drives the migration: it leaves its first canary step.
        wait_for(lambda: progress(stored(survivors[0])) >= (1, 1), timeout=15,
                 what="the first leader to advance a step")
        before_kill = progress(stored(survivors[0]))
        print(f"\nkilling leader {leader.name} at step {before_kill}")

        traffic.drop(leader)
        leader.kill()
        killed_at, killed_wall = time.monotonic(), time.time()
        # The lease outlives the dead leader's last renewal by LEASE_TTL_S; a survivor's next sync takes it.
        wait_for(lambda: leader_sum(survivors) == 1, timeout=LEASE_TTL_S + 1.5,
                 what="a survivor to take the controller lease")
        took_over = time.monotonic()
        print(f"a survivor took the lease {took_over - killed_at:.2f} s after the kill")
        for _ in range(10):
            assert leader_sum(survivors) == 1

        # ... and keeps the migration moving.
        wait_for(lambda: progress(stored(survivors[1])) > before_kill, timeout=15,
                 what=f"the migration to move on from {before_kill} under the new leader")
        moved_at = time.monotonic()
        print(f"the migration moved on to {progress(stored(survivors[1]))} {moved_at - killed_at:.2f} s after the kill")

        # A graceful stop hands the lease over at once instead of leaving it to expire.
        (second,) = leaders(survivors)
        (last,) = [r for r in survivors if r is not second]
        traffic.drop(second)
        second.proc.terminate()
        terminated_at = time.monotonic()
        wait_for(lambda: gauge(last, "cutover_controller_leader") == 1, timeout=LEASE_TTL_S + 1.5,
                 what="the last replica to take the lease")
        handed_over = time.monotonic()
        assert second.proc.wait(timeout=15) == 0, second.stderr()
        print(f"{second.name} stopped gracefully; {last.name} led {handed_over - terminated_at:.2f} s later")
        # It renewed its lease until it stopped, so only a release explains a takeover this early.
        assert handed_over - terminated_at < LEASE_TTL_S
        assert traffic.errors() == [], traffic.errors()[:5]

    moved = [e for e in history(last)
             if e["kind"] == "transition" and e["actor"] == "gates" and epoch(e["time"]) > killed_wall]
    assert moved, "no gate-driven transition after the leader was killed"


def _first_baseline_answer(replica: Replica, client: httpx.Client, probes: list[str], since: float) -> float:
    """Probe `replica` with candidate-bucket sticky keys until one is served by the baseline; return when."""
    sent = itertools.count(1)

    def served_by_the_baseline() -> bool:
        n = next(sent)
        response = chat(replica, probes[n % len(probes)], f"probe-during: {replica.name} {n}", client)
        return served_model(response) == BASELINE_MODEL

    # Probes back to back (every=0): the moment of the first baseline answer is the measurement.
    wait_for(served_by_the_baseline, timeout=max(0.0, since + 5 - time.monotonic()), every=0,
             what=f"{replica.name} to send candidate-bucket keys to the baseline after the rollback")
    return time.monotonic()


def test_a_rollback_through_one_replica_reaches_every_replica_within_two_seconds(
    redis_server: RedisServer, cluster: Cluster
) -> None:
    running = cluster(3, store={"backend": "redis", "url": redis_server.url}, plan=HOLD)
    replicas, baseline, candidate = running.replicas, running.baseline, running.candidate
    probes = candidate_users(50, 6)
    wait_all_applied(replicas, "canary")
    # The probes' sticky keys are in the candidate's 50 %: before the rollback every replica sends them
    # there, so a probe answered by the baseline is proof that this replica has applied the rollback.
    # One client per prober, connected beforehand, so the measurement is not of connection set-up.
    clients = {r.name: httpx.Client(timeout=10) for r in replicas}
    for replica in replicas:
        for user in probes:
            response = chat(replica, user, f"probe-before: {user}", clients[replica.name])
            assert served_model(response) == CANDIDATE_MODEL

    with Traffic(list(replicas), tag="before") as traffic, ThreadPoolExecutor(len(replicas)) as pool:
        wait_for(lambda: traffic.count("before") >= 30, timeout=10, what="traffic before the rollback")
        first = replicas[0]
        version = get_migration(first)["version"]
        response = act(first, "rollback", version, reason="replica test")
        rolled_back_at = time.monotonic()
        assert response.status_code == 200, response.text
        assert response.json()["state"]["phase"] == "rolled_back"
        assert response.headers["etag"] == f'"{version + 1}"'
        # One prober per replica, all at once, so one slow replica does not delay the others' measurement.
        obeyed = [pool.submit(_first_baseline_answer, r, clients[r.name], probes, rolled_back_at) for r in replicas]
        delays = {r.name: round(f.result() - rolled_back_at, 3) for r, f in zip(replicas, obeyed, strict=True)}
        worst = max(delays.values())
        print(f"\nrollback via {first.name}: each replica obeyed after {delays} s (worst {worst:.3f} s)")

        # From now on nothing may reach the candidate, from any replica, whatever the sticky key.
        traffic.set_tag("after")
        for replica in replicas:
            assert get_migration(replica)["state"]["phase"] == "rolled_back"
            assert scrape(replica).phase == "rolled_back"
            for user in probes:
                assert served_model(chat(replica, user, f"probe-after: {user}")) == BASELINE_MODEL
        wait_for(lambda: traffic.count("after") >= 60, timeout=10, what="traffic after the rollback")
    for client in clients.values():
        client.close()

    assert worst < 2.0, f"rollback took {worst:.3f} s to reach every replica"
    assert traffic.errors() == [], traffic.errors()[:5]
    after = [c for c in contents(baseline) if c.startswith(("after:", "probe-after:"))]
    assert len(after) == traffic.count("after") + len(probes) * len(replicas)
    assert not [c for c in contents(candidate) if c.startswith(("after:", "probe-after:"))]
    # Before the rollback the candidate did serve this traffic: the check above is not vacuous.
    assert any(c.startswith("before:") for c in contents(candidate))
    assert {r.model for r in candidate.requests} == {CANDIDATE_MODEL}


def test_the_controller_judges_the_outcomes_of_every_replica(redis_server: RedisServer, cluster: Cluster) -> None:
    running = cluster(3, store={"backend": "redis", "url": redis_server.url}, plan=HOLD)
    replicas, baseline, candidate = running.replicas, running.baseline, running.candidate
    wait_all_applied(replicas, "canary")
    per_replica = {r.name: n for r, n in zip(replicas, (36, 24, 12), strict=True)}
    total = sum(per_replica.values())
    served = {BASELINE_MODEL: 0, CANDIDATE_MODEL: 0}
    for replica in replicas:
        for i in range(per_replica[replica.name]):
            served[served_model(chat(replica, f"{replica.name}-user-{i}", f"pooled: {i}"))] += 1
    assert served[BASELINE_MODEL] > 0 and served[CANDIDATE_MODEL] > 0
    assert sum(c.startswith("pooled:") for c in contents(baseline)) == served[BASELINE_MODEL]
    assert sum(c.startswith("pooled:") for c in contents(candidate)) == served[CANDIDATE_MODEL]

    def last_tick() -> dict[str, Any]:
        ticks = [e for e in history(replicas[0]) if e["kind"] == "tick"]
        return ticks[-1]["verdict"] if ticks else {"requests_baseline": 0, "requests_candidate": 0}

    wait_for(lambda: last_tick()["requests_baseline"] + last_tick()["requests_candidate"] == total,
             timeout=5, what=f"a tick judging all {total} requests", every=0.1)
    verdict = last_tick()
    print(f"\nsent {per_replica}; tick pooled baseline={verdict['requests_baseline']} "
          f"candidate={verdict['requests_candidate']}")
    assert verdict["requests_baseline"] == served[BASELINE_MODEL]
    assert verdict["requests_candidate"] == served[CANDIDATE_MODEL]
    assert verdict["requests_baseline"] + verdict["requests_candidate"] > max(per_replica.values())

    # Each replica's own window holds only what it served; the controller's view is their sum.
    for replica in replicas:
        window = get_migration(replica)["local_window"]
        assert window["baseline"]["requests"] + window["candidate"]["requests"] == per_replica[replica.name]
        assert scrape(replica).value("cutover_migration_requests_total", migration=MIGRATION) == \
            per_replica[replica.name]


OUTAGE_S = 3.0


def test_replicas_serve_on_through_a_redis_outage_and_catch_up_after(
    persistent_redis: RedisServer, cluster: Cluster
) -> None:
    """Redis is SIGKILLed mid-migration and started again on the same port and data directory.

    The restarted Redis is the same one (append-only file, fsync per write) rather than a
    blank one: a blank Redis has lost the migration, so "catching up" with it would mean
    nothing. While it is down no replica can commit anything, so the questions are: do
    clients notice (no), do replicas keep the last state they saw (yes, and no one leads
    or decides), and do they all pick up where they left off once it is back.
    """
    running = cluster(2, store={"backend": "redis", "url": persistent_redis.url}, plan=plan(min_step_s=1.5))
    replicas, baseline, candidate = running.replicas, running.baseline, running.candidate
    with Traffic(list(replicas), tag="before") as traffic:
        seen: dict[str, Any] = {}

        def advanced_and_applied() -> bool:
            state = stored(replicas[0])
            weight = state["candidate_weight_bp"] / 10_000
            seen.update(state)
            return (
                progress(state) >= (1, 1)
                and weight < 1
                and all(scrape(r).weight == weight for r in replicas)
            )

        # Kill Redis right after a step change every replica has applied (the next is >= 1.5 s away).
        wait_for(advanced_and_applied, timeout=20, what="a canary step applied by every replica")
        persistent_redis.kill()
        killed_wall = time.time()
        weight = seen["candidate_weight_bp"] / 10_000

        def degraded(replica: Replica) -> bool:
            answer = readyz(replica)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            return body["status"] == "degraded" and body["store"] == "unreachable"

        wait_for(lambda: all(degraded(r) and gauge(r, "cutover_store_up") == 0 for r in replicas), timeout=5,
                 what="every replica to see Redis down")
        traffic.set_tag("outage")
        for replica in replicas:
            answer = http().get(f"{replica.root_url}/admin/migrations/{MIGRATION}", headers=admin_headers())
            assert answer.status_code == 503 and answer.json()["error"]["code"] == "store_unavailable"

        def standing_still() -> None:
            for replica in replicas:
                seen_now = scrape(replica)
                assert (seen_now.phase, seen_now.weight) == ("canary", weight), f"{replica.name} moved"
                assert seen_now.value("cutover_controller_leader") == 0, f"{replica.name} leads without a store"
                assert seen_now.value("cutover_store_up") == 0
                assert degraded(replica)

        # Longer than a step plus a tick: with the store up, the migration would have moved on meanwhile.
        checks = hold_for(standing_still, seconds=OUTAGE_S)
        during = traffic.count("outage")

        # Taken before the restart: the replicas may reach Redis before our own PING does.
        restarted_wall = time.time()
        persistent_redis.start()

        def recovered(replica: Replica) -> bool:
            body = readyz(replica).json()
            return body["status"] == "ready" and body["store"] == "ok" and gauge(replica, "cutover_store_up") == 1

        wait_for(lambda: all(recovered(r) for r in replicas), timeout=5, what="every replica to see Redis back")
        wait_for(lambda: leader_sum(replicas) == 1, timeout=LEASE_TTL_S + 2, what="a controller leader again")
        traffic.set_tag("after")
        # Every replica's admin API reads the store again at once (no call fails on a dead pooled
        # connection: test_redis_reconnect.py) ...
        assert all(get_migration(r)["version"] >= seen["version"] for r in replicas)
        # ... and the migration moves on from where it was, and every replica follows.
        wait_for(lambda: progress(stored(replicas[0])) > progress(seen), timeout=15,
                 what="the migration to advance again")
        new_weight = stored(replicas[0])["candidate_weight_bp"] / 10_000
        wait_for(lambda: all(scrape(r).weight >= new_weight for r in replicas), timeout=5,
                 what="every replica to apply the step taken after the outage")
        assert traffic.count("after") > 0

    assert traffic.errors() == [], traffic.errors()[:5]
    assert during > 20 and checks > 5, f"only {during} requests and {checks} checks during the outage"
    # Served with the last state seen: both arms kept their share, nothing fell back to the baseline alone.
    assert any(c.startswith("outage:") for c in contents(candidate))
    assert any(c.startswith("outage:") for c in contents(baseline))
    trail = history(replicas[0])
    assert not [e for e in trail if killed_wall <= epoch(e["time"]) <= restarted_wall], "decided during the outage"
    # The restarted Redis kept the very state the replicas served through the outage, and the
    # first decision after it moved on from there (one step, not a jump).
    last_before = [e for e in trail if epoch(e["time"]) < killed_wall][-1]
    assert (last_before["version"], last_before["candidate_weight_bp"]) == (seen["version"], round(weight * 10_000))
    first_after = next(e for e in trail if epoch(e["time"]) > restarted_wall and e["kind"] == "transition")
    assert first_after["from_phase"] == "canary" and first_after["version"] == seen["version"] + 1
    assert first_after["step_index"] == seen["step_index"] + 1 or first_after["to_phase"] == "promoted"
