"""Pre-flight replay through a real gateway on simulated upstreams: requests of an alias with `capture` are
kept, then `cutover replay --migration ID` (POST /admin/migrations/{id}/replay) sends them to both arms of
a pending migration, checks and judges the pairs, and records the gates' verdict, which `history --verify`
recomputes; the migration itself does not move."""

from __future__ import annotations

import asyncio
from html.parser import HTMLParser
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from config.migration import MigrationSpec
from config.schema import CaptureSettings
from gateway.cli import main
from migration.capture import Capture
from migration.compare import AnswerSummary
from migration.replay import Replayer
from migration.verify import verify
from store.memory import MemoryStore
from telemetry.migration_metrics import MigrationMetrics
from tests.gateway.helpers import metric, route
from tests.migration.conftest import StackFactory
from tests.migration.support import ADMIN_KEY, ALIAS, MIGRATION_ID, Stack, admin_client, fast_plan, migration_spec
from tests.support import wait_for

NOT_JSON = "Sure! Here is what you asked for, in plain words rather than JSON."


def replay_stack(
    make_stack: StackFactory, *, candidate: dict[str, Any] | None = None, capture: dict[str, Any] | None = None,
    judge: bool = True, alias_judge: bool = True,
) -> Stack:
    """An alias capturing every request (unless `capture` says otherwise), no migration yet, and a scripted
    judge served by the baseline's simulator."""
    alias = {**route(("legacy", "old")), "capture": {"sample": 1.0, **(capture or {})}}
    if not alias_judge:
        alias["judge"] = False
    models = {ALIAS: alias}
    if judge:
        models["judge"] = route(("legacy", "judge-m"))
    return make_stack(migrations=[], models=models, baseline={"judge": {}, "output_tokens": 24},
                      candidate={"output_tokens": 24, **(candidate or {})})


def create_pending(stack: Stack, **spec: Any) -> None:
    body = {**migration_spec(plan=fast_plan(min_samples=30), **spec), "start": False}
    created = stack.admin.post("/admin/migrations", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["state"]["phase"] == "pending"


def send(stack: Stack, n: int, **kwargs: Any) -> None:
    for i in range(n):
        stack.client.chat.completions.create(model=ALIAS, messages=[{"role": "user", "content": f"Question {i}?"}],
                                             user=f"u{i}", **kwargs)


def captured(stack: Stack, outcome: str = "captured") -> float:
    return metric(stack.metrics(), "cutover_capture_requests_total", alias=ALIAS, outcome=outcome)


def replays(stack: Stack, sim: Any) -> list[Any]:
    return [r for r in sim.requests if (r.request_id or "").startswith(f"replay-{MIGRATION_ID}-")]


def replay(stack: Stack, **body: Any) -> dict[str, Any]:
    response = stack.admin.post(f"/admin/migrations/{MIGRATION_ID}/replay", json=body, timeout=120)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def gate(result: dict[str, Any], name: str) -> dict[str, Any]:
    return next(g for g in result["verdict"]["gates"] if g["gate"] == name and g["scope"] == "step")


def test_a_replay_finds_a_candidate_the_judge_finds_worse_before_any_live_traffic(make_stack: StackFactory) -> None:
    stack = replay_stack(make_stack, candidate={"quality": {"off_topic": 1.0}})
    send(stack, 40)
    wait_for(lambda: captured(stack) == 40, timeout=10, what="every request captured")
    create_pending(stack, gates={"error_rate": 0.15, "quality": {
        "judge": "judge", "noise_share": 1.0, "min_judged": 30, "store_examples": True}})
    before = stack.describe()
    assert replays(stack, stack.candidate) == []  # nothing went to the candidate while it was captured

    result = replay(stack, concurrency=6)
    assert (result["captured"], result["replayed"], result["compared"], result["judged"]) == (40, 40, 40, 40)
    win = gate(result, "quality_win_rate")
    assert win["result"] == "fail" and win["inputs"]["losses"] == 40 and win["inputs"]["noise_pairs"] == 40
    assert result["verdict"]["result"] == "fail"
    # Every captured request went to each arm once, as the client sent it (but for the model).
    assert len(replays(stack, stack.candidate)) == 40
    assert sorted(r.body["user"] for r in replays(stack, stack.candidate)) == sorted(f"u{i}" for i in range(40))
    assert all(r.body["model"] == "new" for r in replays(stack, stack.candidate))

    # The migration did not move; the verdict is in its audit trail, and recomputes.
    after = stack.describe()
    assert (after["state"], after["version"]) == (before["state"], before["version"])
    history = stack.history()
    [entry] = [e for e in history if e["kind"] == "replay"]
    assert entry["actor"] == "ops" and entry["verdict"] == result["verdict"]
    assert entry["replay"]["window"]["candidate"]["quality"]["losses"] == 40
    checked = verify(history)
    assert checked.ok and checked.verdicts == 1, str(checked)

    # The judged pairs were kept (store_examples): the report shows them, losses first, with the judge's reason;
    # a record it cannot read is left out.
    store = stack.gw.app.parts.migrations.store  # type: ignore[union-attr]
    for junk in (b"{not json", b"[1, 2]"):
        asyncio.run_coroutine_threadsafe(store.add_sample("example", MIGRATION_ID, junk, 60.0, 200),
                                         stack.gw._loop).result(5)  # type: ignore[arg-type]
    response = stack.admin.get(f"/admin/migrations/{MIGRATION_ID}/report")
    assert response.status_code == 200
    page = response.text
    found = Attrs.of(page)
    assert found["judged-pairs"]["data-count"] == "8"
    assert page.count('data-verdict="baseline"') == 8 and "is off topic" in page
    assert found["replay"]["data-result"] == "fail" and found["replay"]["data-judged"] == "40"


def test_a_replay_of_json_requests_catches_a_candidate_that_breaks_json(make_stack: StackFactory) -> None:
    stack = replay_stack(make_stack, candidate={"replies": {"new": NOT_JSON}}, judge=False)
    send(stack, 40, response_format={"type": "json_object"})
    wait_for(lambda: captured(stack) == 40, timeout=10, what="every request captured")
    create_pending(stack)
    result = replay(stack)
    json_gate = gate(result, "quality_json")
    assert json_gate["result"] == "fail" and json_gate["inputs"]["worse"] == 40
    assert result["judged"] == 0 and not any(g["gate"] == "quality_win_rate" for g in result["verdict"]["gates"])


def test_an_equivalent_candidate_passes_its_replay(make_stack: StackFactory) -> None:
    stack = replay_stack(make_stack)
    send(stack, 60)
    wait_for(lambda: captured(stack) == 60, timeout=10, what="every request captured")
    create_pending(stack, gates={"error_rate": 0.15, "p99_ms": 5000, "ttft_p99_ms": 5000, "cost_increase": 0.5,
                                 "quality": {"judge": "judge", "noise_share": 1.0, "min_judged": 30}})
    result = replay(stack, concurrency=8)
    win = gate(result, "quality_win_rate")
    assert win["result"] == "pass" and win["inputs"]["ties"] == 60, win
    assert gate(result, "error_rate")["result"] == "pass"


def test_capture_keeps_the_newest_and_leaves_out_what_it_must(make_stack: StackFactory) -> None:
    stack = replay_stack(make_stack, capture={"max_requests": 10, "exclude_tools": True}, alias_judge=False)
    tool = {"type": "function", "function": {"name": "send_email", "parameters": {"type": "object"}}}
    send(stack, 3, tools=[tool])
    send(stack, 15)
    wait_for(lambda: captured(stack) == 15, timeout=10, what="the requests without tools captured")
    assert captured(stack, "excluded") == 3
    create_pending(stack, gates={"quality": {"judge": "judge"}})
    result = replay(stack)
    # Only the newest 10 were kept; the alias says `judge: false`, so none of its pairs reached the judge.
    assert (result["captured"], result["replayed"], result["judged"]) == (10, 10, 0)
    assert sorted(r.body["user"] for r in replays(stack, stack.candidate)) == sorted(f"u{i}" for i in range(5, 15))
    text = stack.metrics()
    assert metric(text, "cutover_judge_dropped_total", migration=MIGRATION_ID, reason="excluded") == 10
    assert metric(text, "cutover_judge_calls_total", migration=MIGRATION_ID, outcome="ok") == 0


def test_a_replay_never_repeats_a_request_naming_a_side_effecting_tool(make_stack: StackFactory) -> None:
    stack = replay_stack(make_stack, judge=False)
    tool = {"type": "function", "function": {"name": "send_email", "parameters": {"type": "object"}}}
    send(stack, 4, tools=[tool])
    send(stack, 6)
    wait_for(lambda: captured(stack) == 10, timeout=10, what="every request captured")
    create_pending(stack, shadow={"exclude_tools": ["send_email"]})
    result = replay(stack, limit=8)
    assert (result["captured"], result["excluded"], result["replayed"]) == (8, 2, 6)
    assert all("send_email" not in str(r.body) for r in replays(stack, stack.candidate))
    assert metric(stack.metrics(), "cutover_replay_requests_total", migration=MIGRATION_ID, outcome="excluded") == 2


def test_replay_errors_are_clear(make_stack: StackFactory, capsys: pytest.CaptureFixture[str]) -> None:
    stack = replay_stack(make_stack, judge=False)
    create_pending(stack)
    nothing = stack.admin.post(f"/admin/migrations/{MIGRATION_ID}/replay")
    assert nothing.status_code == 409 and nothing.json()["error"]["code"] == "nothing_captured"
    missing = stack.admin.post("/admin/migrations/nope/replay")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "migration_not_found"
    bad = stack.admin.post(f"/admin/migrations/{MIGRATION_ID}/replay", json={"concurrency": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "concurrency"
    unknown = stack.admin.post(f"/admin/migrations/{MIGRATION_ID}/replay", json={"sample": 1})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "sample"
    with admin_client(stack.gw, None) as anonymous:
        assert anonymous.post(f"/admin/migrations/{MIGRATION_ID}/replay").status_code == 401
    assert main(["replay", "--url", stack.gw.root_url, "--key", ADMIN_KEY, "--migration", MIGRATION_ID]) == 1
    assert "cutover replay: 409: No captured requests" in capsys.readouterr().err
    assert [e["kind"] for e in stack.history()] == ["transition"]  # a refused replay records nothing


def test_the_cli_prints_the_gates_verdict(make_stack: StackFactory, capsys: pytest.CaptureFixture[str]) -> None:
    stack = replay_stack(make_stack, judge=False)
    send(stack, 12)
    wait_for(lambda: captured(stack) == 12, timeout=10, what="every request captured")
    create_pending(stack)
    code = main(["replay", "--url", stack.gw.root_url, "--key", ADMIN_KEY, "--migration", MIGRATION_ID,
                 "--limit", "10", "--concurrency", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "10 of 10 captured requests replayed on both arms" in out and "10 pairs compared, 0 judged" in out
    assert "verdict: INCONCLUSIVE" in out and "candidate has 10/30 samples" in out
    table = [line.split()[0] for line in out.splitlines()[out.splitlines().index("") + 2:]]
    entry = [e for e in stack.history() if e["kind"] == "replay"][-1]
    assert table == [g["gate"] for g in entry["verdict"]["gates"] if g["scope"] == "step"]


class Attrs(HTMLParser):
    """Each element's attributes by id."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, dict[str, str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if "id" in found:
            self.by_id[found["id"]] = found

    @classmethod
    def of(cls, page: str) -> dict[str, dict[str, str]]:
        parser = cls()
        parser.feed(page)
        return parser.by_id


class Answers:
    """Scripted answers per (model, user); a request the gateway cannot send at all raises."""

    def __init__(self, broken_user: str) -> None:
        self.broken_user = broken_user

    async def fetch(self, call: Any, timeout_s: float) -> AnswerSummary:
        body = call.outbound[0].payload
        if body["user"] == self.broken_user:
            raise RuntimeError("a bug, not an upstream failure")
        failed = body["model"] == "new" and body["user"] == "u1"
        return AnswerSummary(503 if failed else 200, 0.05, cost_micros=100, text="An answer.", finish_reason="stop")


async def test_an_unexpected_failure_counts_for_neither_arm() -> None:
    metrics = MigrationMetrics(CollectorRegistry())
    store = MemoryStore()
    capture = Capture(store, {ALIAS: CaptureSettings(sample=1.0)}, metrics, rng=lambda: 0.0)
    for user in ("u0", "u1", "u2", "u3"):
        capture.offer(ALIAS, {"model": ALIAS, "user": user, "messages": [{"role": "user", "content": "hi"}]}, False,
                      "/chat/completions")
    await capture.settle()
    spec = MigrationSpec.model_validate(migration_spec())
    result = await Replayer(Answers("u2"), capture, None, metrics, clock=lambda: 5.0).replay(spec)  # type: ignore[arg-type]
    assert (result.captured, result.replayed, result.compared) == (4, 3, 2)
    window = result.window
    assert (window.baseline.requests, window.candidate.requests, window.candidate.errors) == (3, 3, 1)
    assert metrics.replayed.labels(MIGRATION_ID, "failed")._value.get() == 1
    assert result.verdict.evaluated_at == result.verdict.step_started_at == 5.0


def test_streamed_and_responses_api_requests_are_captured_and_replayed(make_stack: StackFactory) -> None:
    stack = replay_stack(make_stack, judge=False)
    client = stack.client
    for i in range(2):
        stream = client.chat.completions.create(model=ALIAS, messages=[{"role": "user", "content": f"Q{i}?"}],
                                                user=f"s{i}", stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert client.responses.create(model=ALIAS, input=f"R{i}?", user=f"r{i}").output_text
        with client.responses.stream(model=ALIAS, input=f"RS{i}?", user=f"rs{i}") as events:
            assert events.get_final_response().output_text
    wait_for(lambda: captured(stack) == 6, timeout=10, what="every request captured")
    create_pending(stack)
    result = replay(stack)
    assert (result["captured"], result["replayed"], result["compared"]) == (6, 6, 6)
    copies = {r.body["user"]: r for r in replays(stack, stack.candidate)}
    assert sorted(copies) == ["r0", "r1", "rs0", "rs1", "s0", "s1"]
    # Each went as the canonical request it was captured as; a stream streamed again, its usage asked for.
    for user, record in copies.items():
        assert record.path == "/v1/chat/completions" and record.body["model"] == "new"
        streamed = user.startswith(("s", "rs"))
        assert bool(record.body.get("stream")) == streamed
        assert (record.body.get("stream_options") == {"include_usage": True}) == streamed
    # The four streams' times to first token are in the replay's window, on both arms.
    for arm in ("baseline", "candidate"):
        assert sum(result["window"][arm]["ttft_ms"]["counts"].values()) == 4
