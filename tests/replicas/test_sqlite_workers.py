"""`cutover serve --workers 2` on the default SQLite store: two processes behind one port.

The workers share the store file; one holds the controller lease. Which worker answers a
request is up to the kernel, so each worker's own view is read from its files in the
prometheus multiprocess directory (set by the test so it can look inside).
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.replicas.harness import (
    MIGRATION,
    Cluster,
    Scraped,
    Traffic,
    act,
    contents,
    get_migration,
    history,
    per_worker_metrics,
    plan,
    scrape,
)
from tests.support import wait_for


def test_two_workers_share_one_controller_and_both_obey_a_rollback(cluster: Cluster, tmp_path: Path) -> None:
    metrics_dir, scratch = tmp_path / "metrics", tmp_path / "scratch"
    metrics_dir.mkdir()
    running = cluster(
        1, store={"backend": "sqlite", "path": str(tmp_path / "state.sqlite")}, plan=plan(), workers=2,
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )
    (server,) = running.replicas

    def workers() -> dict[int, Scraped]:
        return per_worker_metrics(metrics_dir, scratch)

    def leading() -> list[int]:
        return [pid for pid, text in workers().items() if text.value("cutover_controller_leader") == 1]

    def migrated(text: Scraped) -> float:
        return text.value("cutover_migration_requests_total", migration=MIGRATION)

    wait_for(lambda: len(workers()) == 2, timeout=30, what="two workers with metrics")
    with Traffic([server], fresh_connections=True, tag="before") as traffic:
        wait_for(lambda: len(leading()) == 1, timeout=10, what="one worker to take the controller lease")
        # The migration advances under one lease holder, on outcomes counted by both workers.
        wait_for(lambda: get_migration(server)["state"]["step_index"] >= 1, timeout=20,
                 what="the migration to leave its first canary step")
        for _ in range(5):
            assert len(leading()) == 1
            assert scrape(server).value("cutover_controller_leader") == 1  # livesum over the workers
        assert all(migrated(text) > 0 for text in workers().values()), "a worker served no migrated traffic"

        version = get_migration(server)["version"]
        response = act(server, "rollback", version, reason="two workers")
        rolled_back_at = time.monotonic()
        assert response.status_code == 200, response.text
        # The worker that took the request applied it at once; the other on its next sync.
        wait_for(lambda: all(t.phase == "rolled_back" for t in workers().values()), timeout=5,
                 what="both workers to apply the rollback")
        obeyed = time.monotonic()
        print(f"\nboth workers applied the rollback {obeyed - rolled_back_at:.3f} s after the response")
        assert obeyed - rolled_back_at < 2.0

        traffic.set_tag("after")
        served_before = {pid: t.value("cutover_requests_total", provider="legacy") for pid, t in workers().items()}

        def both_served_after() -> bool:
            now = workers()
            return traffic.count("after") >= 40 and all(
                now[pid].value("cutover_requests_total", provider="legacy") >= served_before[pid] + 3
                for pid in served_before
            )

        wait_for(both_served_after, timeout=15, what="both workers to serve requests after the rollback", every=0.1)

    assert traffic.errors() == [], traffic.errors()[:5]
    assert sum(c.startswith("after:") for c in contents(running.baseline)) == traffic.count("after")
    assert not [c for c in contents(running.candidate) if c.startswith("after:")]
    assert any(c.startswith("before:") for c in contents(running.candidate))
    gated = [e for e in history(server) if e["kind"] == "transition" and e["actor"] == "gates"]
    assert gated, "no step was taken by the gates"
