"""The operators' API: keys, If-Match, every action, creation and the kill switch.

Every error must be OpenAI-shaped (`{"error": {message, type, param, code}}`).
Unless a test says otherwise, the migration starts straight in canary step 0
(25 %) with a plan the controller never advances by itself.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from migration.split import choose_arm
from tests.gateway.helpers import assert_error, metric, route
from tests.migration.conftest import StackFactory
from tests.migration.support import (
    ADMIN_KEY,
    ALIAS,
    MIGRATION_ID,
    SALT,
    Stack,
    admin_client,
    held_plan,
    migration_spec,
    primaries,
)
from tests.support import CLIENT_KEY, wait_for

OTHER = "gpt-4-mini"
MODELS = {ALIAS: route(("legacy", "old")), OTHER: route(("legacy", "old"))}
USERS = [f"user-{i}" for i in range(40)]


def _held(make_stack: StackFactory, **kwargs: Any) -> Stack:
    stack = make_stack(migrations=[migration_spec(plan=held_plan())], models=MODELS, **kwargs)
    stack.wait_for("canary", step=0)
    return stack


def _error(response: httpx.Response, status: int, type_: str, code: str | None, param: str | None = None) -> str:
    return str(assert_error(response, status=status, type_=type_, code=code, param=param)["message"])


# -- keys ---------------------------------------------------------------------------------


def test_only_admin_keys_may_use_the_admin_api(make_stack: StackFactory) -> None:
    stack = _held(make_stack)
    with admin_client(stack.gw, CLIENT_KEY) as client_key, admin_client(stack.gw, "sk-wrong") as wrong, \
            admin_client(stack.gw, None) as anonymous:
        for send in (
            lambda c: c.get("/admin/migrations"),
            lambda c: c.post(f"/admin/migrations/{MIGRATION_ID}/pause", headers={"if-match": "1"}),
            lambda c: c.put(f"/admin/aliases/{ALIAS}/kill-switch", json={"enabled": True}),
        ):
            message = _error(send(client_key), 403, "permission_error", "permission_denied")
            assert "Client keys cannot use the admin API" in message
            assert "Incorrect admin key" in _error(send(wrong), 401, "authentication_error", "invalid_api_key")
            _error(send(anonymous), 401, "authentication_error", "invalid_api_key")
    # None of that changed anything.
    assert stack.state()["phase"] == "canary" and stack.live.kill_switches() == frozenset()
    assert stack.admin.get("/admin/migrations").json()["data"][0]["id"] == MIGRATION_ID


def test_without_admin_keys_the_admin_api_is_closed(make_stack: StackFactory) -> None:
    stack = make_stack(migrations=[migration_spec(plan=held_plan())], admin=False)
    stack.wait_for("canary")
    for key in (ADMIN_KEY, CLIENT_KEY):
        with admin_client(stack.gw, key) as client:
            message = _error(client.get("/admin/migrations"), 403, "permission_error", "permission_denied")
            assert "admin.keys" in message
            response = client.put(f"/admin/aliases/{ALIAS}/kill-switch", json={"enabled": True})
            _error(response, 403, "permission_error", "permission_denied")


# -- versions -------------------------------------------------------------------------------


def test_changes_need_the_current_version_in_if_match(make_stack: StackFactory) -> None:
    stack = _held(make_stack)
    described = stack.admin.get(f"/admin/migrations/{MIGRATION_ID}")
    version = described.json()["version"]
    assert described.headers["etag"] == f'"{version}"'
    url = f"/admin/migrations/{MIGRATION_ID}/pause"

    message = _error(stack.admin.post(url), 428, "invalid_request_error", "if_match_required")
    assert "If-Match" in message
    message = _error(stack.admin.post(url, headers={"if-match": "abc"}), 400, "invalid_request_error", None)
    assert "If-Match" in message
    stale = stack.admin.post(url, headers={"if-match": f'"{version - 1}"'})
    message = _error(stale, 409, "invalid_request_error", "conflict")
    assert f"at version {version}, not {version - 1}" in message
    assert stack.describe()["version"] == version

    # The ETag as given, weak or bare, all name the same version.
    paused = stack.admin.post(url, headers={"if-match": described.headers["etag"]})
    assert paused.status_code == 200 and paused.headers["etag"] == f'"{version + 1}"'
    resumed = stack.admin.post(f"/admin/migrations/{MIGRATION_ID}/resume", headers={"if-match": f'W/"{version + 1}"'})
    assert resumed.status_code == 200, resumed.text
    again = stack.admin.post(url, headers={"if-match": str(version + 2)})
    assert again.status_code == 200 and again.json()["state"]["phase"] == "paused"


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_two_actions_on_the_same_version_one_wins_one_conflicts(
    make_stack: StackFactory, tmp_path: Path, backend: str
) -> None:
    store = {"backend": "memory"} if backend == "memory" else {"backend": "sqlite", "path": str(tmp_path / "s.db")}
    stack = _held(make_stack, store=store)
    version = stack.describe()["version"]
    barrier = threading.Barrier(2)
    results: dict[str, httpx.Response] = {}

    def send(action: str) -> None:
        with admin_client(stack.gw) as client:
            barrier.wait(timeout=10)
            results[action] = client.post(
                f"/admin/migrations/{MIGRATION_ID}/{action}", headers={"if-match": f'"{version}"'}
            )

    threads = [threading.Thread(target=send, args=(action,)) for action in ("promote", "abort")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    statuses = sorted(r.status_code for r in results.values())
    assert statuses == [200, 409], {a: r.text for a, r in results.items()}
    winner = next(a for a, r in results.items() if r.status_code == 200)
    loser = next(a for a, r in results.items() if r.status_code == 409)
    _error(results[loser], 409, "invalid_request_error", "conflict")
    state = stack.describe()
    assert state["version"] == version + 1
    assert state["state"]["phase"] == ("canary" if winner == "promote" else "aborted")
    actions = [e["action"] for e in stack.transitions()]
    assert actions[-1] == winner.capitalize() and loser.capitalize() not in actions


def test_an_event_the_phase_does_not_expect_is_a_conflict(make_stack: StackFactory) -> None:
    stack = _held(make_stack)
    version = stack.describe()["version"]
    message = _error(stack.act("resume"), 409, "invalid_request_error", "conflict")
    assert message == "Resume rejected in phase canary step 0: the migration is not paused"
    message = _error(stack.act("retry"), 409, "invalid_request_error", "conflict")
    assert "only a rolled-back migration can be retried" in message
    message = _error(stack.act("start"), 409, "invalid_request_error", "conflict")
    assert "already started" in message
    assert stack.describe()["version"] == version


# -- actions ---------------------------------------------------------------------------------


def test_set_weight_pauses_automatic_analysis_and_routes_by_the_weight(make_stack: StackFactory) -> None:
    stack = _held(make_stack)
    _error(stack.act("set-weight"), 400, "invalid_request_error", None, param="weight")
    _error(stack.act("set-weight", weight=150), 400, "invalid_request_error", None, param="weight")
    _error(stack.act("set-weight", weight=30, colour="red"), 400, "invalid_request_error", None, param="colour")
    wait_for(lambda: len(stack.ticks()) >= 2, timeout=10, what="the controller analysing the running step")

    described = stack.act_ok("set-weight", weight=30)
    state = described["state"]
    assert (state["phase"], state["candidate_weight_bp"], state["shadow_percent"]) == ("paused", 3000, 0.0)
    assert state["paused_from"] == {"phase": "canary", "step_index": 0}
    assert state["reason"] == "weight set to 3000 bp by ops; automatic analysis paused"
    assert described["auto_analysis"] is False

    ticks = len(stack.ticks())
    since = time.time()
    stack.send_users(USERS)
    stack.wait_rounds(0.6)  # three analysis intervals
    assert len(stack.ticks()) == ticks
    arms = stack.arms_of(since)
    assert {u for u, a in arms.items() if a == "candidate"} == {
        u for u in USERS if choose_arm(3000, u, SALT, MIGRATION_ID, lambda: 0.0) == "candidate"
    }

    # Resume goes back to the step it left, at the plan's weight.
    resumed = stack.act_ok("resume")
    assert (resumed["state"]["phase"], resumed["state"]["candidate_weight_bp"]) == ("canary", 2500)
    assert resumed["auto_analysis"] is True


def test_pause_and_resume(make_stack: StackFactory) -> None:
    stack = _held(make_stack)
    before = stack.state()
    paused = stack.act_ok("pause", reason="maintenance")
    assert paused["state"]["phase"] == "paused" and paused["auto_analysis"] is False
    assert paused["state"]["reason"] == "paused by ops: maintenance"
    assert paused["state"]["candidate_weight_bp"] == 2500
    message = _error(stack.act("pause"), 409, "invalid_request_error", "conflict")
    assert "only a running migration can be paused" in message

    resumed = stack.act_ok("resume")["state"]
    assert (resumed["phase"], resumed["step_index"], resumed["candidate_weight_bp"]) == ("canary", 0, 2500)
    assert resumed["step_started_at"] > before["step_started_at"]  # a fresh window
    assert resumed["reason"] == "resumed canary step 0 by ops"
    last = stack.transitions()[-2:]
    assert [(e["action"], e["actor"], e["to_phase"]) for e in last] == [
        ("Pause", "ops", "paused"), ("Resume", "ops", "canary"),
    ]


def test_promote_one_step_then_fully_then_abort(make_stack: StackFactory) -> None:
    stack = _held(make_stack)
    one = stack.act_ok("promote")["state"]
    assert (one["phase"], one["step_index"], one["candidate_weight_bp"]) == ("canary", 1, 5000)
    assert one["reason"] == "promoted to canary step 1 by ops"

    full = stack.act_ok("promote-fully")
    assert (full["state"]["phase"], full["state"]["candidate_weight_bp"]) == ("promoted", 10000)
    assert full["state"]["shadow_percent"] == 50.0  # the post-promotion copy to the old baseline
    assert full["auto_analysis"] is True
    message = _error(stack.act("promote"), 409, "invalid_request_error", "conflict")
    assert message.endswith("only a migration in shadow, canary or paused can be promoted")
    stack.act_ok("pause")
    message = _error(stack.act("promote-fully"), 409, "invalid_request_error", "conflict")
    assert "already promoted; Resume continues the safety window" in message
    assert stack.act_ok("resume")["state"]["phase"] == "promoted"

    aborted = stack.act_ok("abort", reason="changed our minds")["state"]
    assert (aborted["phase"], aborted["candidate_weight_bp"], aborted["shadow_percent"]) == ("aborted", 0, 0.0)
    assert aborted["reason"] == "aborted by ops: changed our minds"
    _error(stack.act("abort"), 409, "invalid_request_error", "conflict")
    assert [e["action"] for e in stack.transitions()] == [
        "Create", "Start", "Promote", "PromoteFully", "Pause", "Resume", "Abort",
    ]
    # Aborted: the route as configured, the baseline only.
    since = time.time()
    stack.send_users(USERS[:10])
    assert len(primaries(stack.baseline, since)) == 10 and primaries(stack.candidate, since) == []


def test_manual_rollback_then_retry(make_stack: StackFactory) -> None:
    stack = _held(make_stack)
    rolled = stack.act_ok("rollback", reason="bad answers")["state"]
    assert (rolled["phase"], rolled["candidate_weight_bp"], rolled["shadow_percent"]) == ("rolled_back", 0, 0.0)
    assert rolled["reason"] == "rolled back by ops: bad answers"
    text = stack.metrics()
    assert metric(text, "cutover_migration_rollbacks_total", migration=MIGRATION_ID, reason="manual") == 1
    message = _error(stack.act("rollback"), 409, "invalid_request_error", "conflict")
    assert "no traffic to roll back" in message
    since = time.time()
    stack.send_users(USERS)
    assert primaries(stack.candidate, since) == []

    retried = stack.act_ok("retry")
    state = retried["state"]
    assert (state["phase"], state["step_index"], state["candidate_weight_bp"]) == ("canary", 0, 2500)
    assert state["reason"] == "retried by ops" and retried["auto_analysis"] is True
    since = time.time()
    stack.send_users(USERS)
    assert primaries(stack.candidate, since), "the split is back after the retry"
    assert [e["action"] for e in stack.transitions()][-2:] == ["Rollback", "Retry"]


# -- creation -------------------------------------------------------------------------------------


def test_create_a_migration_through_the_api(make_stack: StackFactory) -> None:
    stack = _held(make_stack)
    spec = migration_spec(migration_id="m2", alias=OTHER, plan=held_plan())

    created = stack.admin.post("/admin/migrations", json={**spec, "start": False})
    assert created.status_code == 201, created.text
    assert created.headers["etag"] == '"0"'
    body = created.json()
    assert (body["id"], body["version"], body["state"]["phase"]) == ("m2", 0, "pending")
    assert body["spec"]["candidate"] == {"provider": "modern", "model": "new"}
    assert [m["id"] for m in stack.admin.get("/admin/migrations").json()["data"]] == [MIGRATION_ID, "m2"]

    started = stack.act_ok("start", migration_id="m2")
    assert started["state"]["phase"] == "canary" and started["version"] == 1
    # Transitions only: the controller may already have recorded an analysis tick of the started step.
    history = stack.transitions("m2")
    assert [(e["action"], e["actor"]) for e in history] == [("Create", "ops"), ("Start", "ops")]

    message = _error(stack.admin.post("/admin/migrations", json=spec), 409, "invalid_request_error", "conflict")
    assert "exists already" in message
    other = migration_spec(migration_id="m3", alias=OTHER)
    message = _error(stack.admin.post("/admin/migrations", json=other), 409, "invalid_request_error", "conflict")
    assert "already has a running migration 'm2'" in message


@pytest.mark.parametrize(
    ("change", "param", "fragment"),
    [
        ({"plan": held_plan(weights=[25, 50])}, "plan.weights", "last weight must be 100"),
        ({"plan": held_plan(weights=[50, 25, 100])}, "plan.weights", "strictly increasing"),
        ({"sticky": {"salt": ""}}, "sticky.salt", "sticky.salt: String should have at least 1 character"),
        ({"id": "no spaces allowed"}, "id", ""),
        ({"colour": "blue"}, "colour", ""),
        ({"gates": {"error_rate": 2}}, "gates.error_rate", ""),
        ({"candidate": {"provider": "legacy", "model": "old"}}, None, "candidate must differ from baseline"),
    ],
    ids=["weights-end", "weights-order", "sticky", "id", "unknown-field", "gate-range", "same-target"],
)
def test_invalid_specs_are_refused_with_the_offending_param(
    make_stack: StackFactory, change: dict[str, Any], param: str | None, fragment: str
) -> None:
    stack = _held(make_stack)
    spec = {**migration_spec(migration_id="bad", alias=OTHER), **change}
    spec = {k: v for k, v in spec.items() if v is not None}
    message = _error(stack.admin.post("/admin/migrations", json=spec), 400, "invalid_request_error", None, param)
    assert message.startswith("Invalid migration spec") and fragment in message
    # The message names the field's path, as the config loader does.
    assert param is None or f"{param}:" in message
    assert [m["id"] for m in stack.admin.get("/admin/migrations").json()["data"]] == [MIGRATION_ID]


def test_a_spec_without_sticky_salts_its_buckets_with_its_id(make_stack: StackFactory) -> None:
    stack = _held(make_stack)
    spec = {k: v for k, v in migration_spec(migration_id="m2", alias=OTHER, plan=held_plan()).items()
            if k != "sticky"}
    created = stack.admin.post("/admin/migrations", json={**spec, "start": False})
    assert created.status_code == 201, created.text
    assert created.json()["spec"]["sticky"] == {"header": "x-cutover-sticky-key", "salt": "m2"}


def test_a_trailing_slash_is_the_same_path_and_never_a_redirect(make_stack: StackFactory) -> None:
    stack = _held(make_stack)
    listed = stack.admin.get("/admin/migrations/")
    assert listed.status_code == 200 and listed.json()["data"][0]["id"] == MIGRATION_ID
    with admin_client(stack.gw, None) as anonymous:
        # Once a 307 to whatever the Host header said, before any key was checked.
        response = anonymous.get("/admin/migrations/", headers={"host": "evil.example"})
    _error(response, 401, "authentication_error", "invalid_api_key")
    assert "location" not in response.headers


def test_specs_naming_unknown_aliases_or_providers_or_no_json_are_refused(make_stack: StackFactory) -> None:
    stack = _held(make_stack)
    unknown_alias = migration_spec(migration_id="m2", alias="nope")
    message = _error(
        stack.admin.post("/admin/migrations", json=unknown_alias), 400, "invalid_request_error", "invalid_migration"
    )
    assert message == "unknown model alias 'nope'"
    ghost = migration_spec(migration_id="m2", alias=OTHER, candidate={"provider": "ghost", "model": "x"})
    message = _error(stack.admin.post("/admin/migrations", json=ghost), 400, "invalid_request_error",
                     "invalid_migration")
    assert message == "candidate.provider: unknown provider 'ghost'"
    not_json = stack.admin.post("/admin/migrations", content=b"{not json", headers={"content-type": "application/json"})
    assert "JSON" in _error(not_json, 400, "invalid_request_error", None)
    a_list = stack.admin.post("/admin/migrations", json=[1, 2])
    assert "JSON object" in _error(a_list, 400, "invalid_request_error", None)


def test_unknown_migrations_and_actions_are_not_found(make_stack: StackFactory) -> None:
    stack = _held(make_stack)
    for response in (
        stack.admin.get("/admin/migrations/ghost"),
        stack.admin.get("/admin/migrations/ghost/history"),
        stack.admin.post("/admin/migrations/ghost/pause", headers={"if-match": "1"}),
    ):
        assert "no migration 'ghost'" in _error(response, 404, "invalid_request_error", "migration_not_found")
    message = _error(stack.act("explode"), 404, "invalid_request_error", "unknown_action")
    assert "explode" in message


# -- kill switch ----------------------------------------------------------------------------------


def test_kill_switch_routes_everything_to_the_baseline_at_once_and_off_restores_the_split(
    make_stack: StackFactory,
) -> None:
    # The controller is effectively stopped: it syncs only when an admin call wakes it, and never analyses.
    plan = held_plan(weights=[50, 100], interval_s=1e6)
    stack = make_stack(migrations=[migration_spec(plan=plan)], controller={"sync_interval_s": 3600})
    stack.wait_for("canary", step=0)

    since = time.time()
    stack.send_users(USERS)
    split = stack.arms_of(since)
    assert set(split.values()) == {"baseline", "candidate"}

    stack.kill_switch(True)
    since = time.time()
    stack.send_users(USERS)
    assert primaries(stack.candidate, since) == []
    assert sorted(stack.arms_of(since)) == sorted(USERS)
    assert stack.admin.get("/admin/kill-switches").json() == {"aliases": [ALIAS]}
    described = stack.describe()
    assert described["kill_switch"] is True and described["state"]["phase"] == "canary"

    stack.kill_switch(False)
    since = time.time()
    stack.send_users(USERS)
    assert stack.arms_of(since) == split
    assert stack.admin.get("/admin/kill-switches").json() == {"aliases": []}

    unknown = stack.admin.put("/admin/aliases/nope/kill-switch", json={"enabled": True})
    _error(unknown, 404, "invalid_request_error", "model_not_found")
    missing = stack.admin.put(f"/admin/aliases/{ALIAS}/kill-switch", json={})
    _error(missing, 400, "invalid_request_error", None, param="enabled")
    assert stack.live.kill_switches() == frozenset()
