"""`cutover migrate ...` against a live gateway: what it prints and what it changes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from tests.gateway.helpers import route
from tests.migration.conftest import StackFactory
from tests.migration.support import ADMIN_KEY, ALIAS, MIGRATION_ID, Stack, held_plan, migration_spec

OTHER = "gpt-4-mini"


@pytest.fixture
def stack(make_stack: StackFactory) -> Stack:
    stack = make_stack(
        migrations=[migration_spec(plan=held_plan())],
        models={ALIAS: route(("legacy", "old")), OTHER: route(("legacy", "old"))},
    )
    stack.wait_for("canary", step=0)
    return stack


def _run(stack: Stack, capsys: pytest.CaptureFixture[str], *args: str, key: str = ADMIN_KEY) -> tuple[int, str, str]:
    code = main(["migrate", "--url", stack.gw.root_url, "--key", key, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _row(out: str, migration_id: str = MIGRATION_ID) -> list[str]:
    """The status table's row of a migration, split on runs of spaces."""
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "ALIAS", "PHASE", "STEP", "CANDIDATE", "SHADOW", "VERSION", "REASON"]
    row = next(line for line in lines[1:] if line.startswith(migration_id + " "))
    return row.split()


def test_status_and_history(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(stack, capsys, "status")
    assert (code, err) == (0, "")
    assert _row(out)[:7] == [MIGRATION_ID, ALIAS, "canary", "0", "25%", "0%", "1"]
    code, out, _ = _run(stack, capsys, "status", MIGRATION_ID)
    assert code == 0 and len(out.splitlines()) == 2 and _row(out)[2] == "canary"

    code, out, _ = _run(stack, capsys, "history", MIGRATION_ID)
    assert code == 0
    lines = out.splitlines()
    assert "Create" in lines[0] and "pending" in lines[0] and "created by config" in lines[0]
    assert "Start" in lines[1] and "pending -> canary" in lines[1] and "candidate 25%" in lines[1]


def test_pause_resume_set_weight_rollback_and_kill_switch(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(stack, capsys, "pause", MIGRATION_ID, "--reason", "from the cli")
    assert code == 0 and _row(out)[2] == "paused"
    assert stack.state()["reason"] == "paused by ops: from the cli"

    code, out, _ = _run(stack, capsys, "resume", MIGRATION_ID)
    assert code == 0 and _row(out)[2:5] == ["canary", "0", "25%"]

    code, out, _ = _run(stack, capsys, "set-weight", MIGRATION_ID, "30")
    assert code == 0 and _row(out)[2:5] == ["paused", "-", "30%"]
    assert stack.describe()["auto_analysis"] is False

    code, out, _ = _run(stack, capsys, "kill-switch", ALIAS, "on")
    assert (code, out.strip()) == (0, f"kill switch for {ALIAS}: on")
    assert stack.live.kill_switches() == frozenset({ALIAS})
    code, out, _ = _run(stack, capsys, "status")
    assert "paused (kill switch)" in out
    code, out, _ = _run(stack, capsys, "kill-switch", ALIAS, "off")
    assert (code, out.strip()) == (0, f"kill switch for {ALIAS}: off")
    assert stack.live.kill_switches() == frozenset()

    code, out, _ = _run(stack, capsys, "rollback", MIGRATION_ID, "--reason", "bad answers")
    assert code == 0 and _row(out)[2:5] == ["rolled_back", "-", "0%"]
    assert stack.state()["reason"] == "rolled back by ops: bad answers"
    assert [e["action"] for e in stack.transitions()] == [
        "Create", "Start", "Pause", "Resume", "SetWeight", "Rollback",
    ]


def test_create_from_a_file(stack: Stack, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "m2.yaml"
    path.write_text(yaml.safe_dump(migration_spec(migration_id="m2", alias=OTHER, plan=held_plan())))
    code, out, _ = _run(stack, capsys, "create", str(path), "--no-start")
    assert code == 0 and _row(out, "m2")[:3] == ["m2", OTHER, "pending"]
    code, out, _ = _run(stack, capsys, "start", "m2")
    assert code == 0 and _row(out, "m2")[2] == "canary"


def test_refused_actions_exit_non_zero_with_a_readable_message(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    version = stack.describe()["version"]
    code, out, err = _run(stack, capsys, "resume", MIGRATION_ID)
    assert (code, out) == (1, "")
    assert err.strip() == (
        "cutover migrate: 409: Resume rejected in phase canary step 0: the migration is not paused"
    )
    code, _, err = _run(stack, capsys, "pause", MIGRATION_ID, "--if-match", str(version - 1))
    assert code == 1 and err.startswith("cutover migrate: 409: ") and f"at version {version}" in err
    code, _, err = _run(stack, capsys, "pause", "ghost")
    assert code == 1 and err.strip() == "cutover migrate: 404: no migration 'ghost'"
    code, _, err = _run(stack, capsys, "status", key="sk-wrong")
    assert code == 1 and err.strip() == "cutover migrate: 401: Incorrect admin key provided."
    assert stack.describe()["version"] == version

    monkeypatch.delenv("CUTOVER_ADMIN_KEY", raising=False)
    assert main(["migrate", "--url", stack.gw.root_url, "status"]) == 1
    assert "no admin key" in capsys.readouterr().err

    # An action the CLI does not know is refused by the argument parser itself.
    with pytest.raises(SystemExit) as exited:
        _run(stack, capsys, "explode", MIGRATION_ID)
    assert exited.value.code == 2
    assert "invalid choice: 'explode'" in capsys.readouterr().err
