"""Verdicts through a real `cutover serve`, with the default retries on.

A candidate failing 3 % of its upstream calls looks healthy to its clients (a failed call
is retried, and a request failing twice falls back to the baseline), but the error gate
counts every attempt and rolls it back; the audit shows both figures. A healthy candidate
at low traffic is promoted. Plans are in seconds and the level is loose (alpha 0.2) so the
tests finish in tens of seconds; the statistics at the defaults are bench/decisions.py's.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from simulator import BackgroundSimulator, SimulationSettings
from tests.replicas.harness import (
    ADMIN_KEY,
    MIGRATION,
    Replica,
    Traffic,
    get_migration,
    history,
    plan,
    start_replicas,
    stop_all,
    write_config,
)
from tests.support import cutover_command, wait_for


def serve(tmp_path: Path, baseline: BackgroundSimulator, candidate: BackgroundSimulator,
          step_plan: dict[str, Any]) -> Replica:
    config = write_config(tmp_path / "cutover.yaml", baseline, candidate,
                          {"backend": "sqlite", "path": str(tmp_path / "state.sqlite")}, step_plan)
    raw = yaml.safe_load(config.read_text())
    # The defaults of a real deployment: two attempts per target, then the next target.
    raw["routing"] = {"retry": {"max_attempts_per_target": 2, "initial_backoff_s": 0.01, "max_backoff_s": 0.05,
                                "jitter_s": 0.0}}
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    (replica,) = start_replicas(config, 1, tmp_path)
    return replica


def test_a_candidate_failing_three_percent_of_its_calls_is_rolled_back(
    tmp_path: Path, sims: tuple[BackgroundSimulator, BackgroundSimulator]
) -> None:
    baseline, candidate = sims
    candidate.set_settings(SimulationSettings(
        output_tokens=4, record_limit=100_000, error_rate=0.03, error_kinds={"server_error": 1.0}, seed=11))
    replica = serve(tmp_path, baseline, candidate, plan(weights=[50, 100], min_step_s=1.0, max_step_s=600,
                                                         consecutive_failures=2))
    try:
        with Traffic([replica], per_second=150.0) as traffic:
            wait_for(lambda: get_migration(replica)["state"]["phase"] == "rolled_back", timeout=120,
                     what="the rollback")
        # Retries and the fallback hid the candidate's failures from every client.
        assert traffic.errors() == []
        rollback = [e for e in history(replica) if e["kind"] == "transition"][-1]
        assert (rollback["from_phase"], rollback["to_phase"]) == ("canary", "rolled_back")
        gate = next(g for g in rollback["verdict"]["gates"] if g["gate"] == "error_rate" and g["scope"] == "step")
        attempts, failed = gate["inputs"]["n"], gate["inputs"]["k_fail"]
        assert gate["result"] == "fail" and 0.015 < failed / attempts < 0.06, gate
        assert gate["beside"] == 0.0 and "clients saw 0/" in gate["note"], gate
        assert "upstream attempts failed" in rollback["reason"]

        # Every verdict of this migration, the rollback's included, recomputed from the audit records alone.
        verified = subprocess.run(
            [*cutover_command(), "migrate", "--url", replica.root_url, "--key", ADMIN_KEY, "history", MIGRATION,
             "--verify"], capture_output=True, text=True, timeout=60,
        )
        assert verified.returncode == 0, verified.stderr
        ticks = sum(1 for e in history(replica) if e.get("verdict"))
        assert f"{ticks} verdicts and " in verified.stdout and "all match" in verified.stdout, verified.stdout
    finally:
        stop_all([replica])


def test_a_healthy_candidate_at_low_traffic_is_promoted(
    tmp_path: Path, sims: tuple[BackgroundSimulator, BackgroundSimulator]
) -> None:
    baseline, candidate = sims
    replica = serve(tmp_path, baseline, candidate, plan(weights=[100], min_step_s=1.0, max_step_s=600,
                                                         safety_window_s=1.0))
    try:
        with Traffic([replica], per_second=20.0) as traffic:
            wait_for(lambda: get_migration(replica)["state"]["phase"] == "promoted"
                     and get_migration(replica)["state"]["shadow_percent"] == 0, timeout=120,
                     what="the promotion to settle")
        assert traffic.errors() == []
        moves = [(e["from_phase"], e["to_phase"]) for e in history(replica) if e["kind"] == "transition"]
        assert ("rolled_back" not in {to for _, to in moves}) and moves[-2:] == [
            ("canary", "promoted"), ("promoted", "promoted")]
    finally:
        stop_all([replica])
