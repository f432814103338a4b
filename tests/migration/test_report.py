"""The migration report (migration.report) from a synthetic audit trail: its numbers are the audit's, its text
is escaped, it needs nothing from elsewhere, and its confidence bounds agree with the gates' own tests.

`Page` reads a rendered page back (stdlib HTML parser): every element with its attributes and text. The browser
test (tests/gateway/test_report_browser.py) reads the DOM Chromium rendered with it.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import pytest

from migration.gates import GateFigures, decide, judge
from migration.judge import example
from migration.report import render_report
from migration.report_figures import MAX_POINTS, confidence_bounds
from migration.sequential import block_alpha
from migration.service import utc_now_iso
from migration.window import ArmWindow, Kind, Sample, StepWindow

T0 = 1_800_000_000.0
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parts: list[str] = field(default_factory=list)
    children: list[Element] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def inside(self, tag: str) -> list[Element]:
        """The elements named `tag` anywhere inside this one."""
        return [d for c in self.children for d in ([c] if c.tag == tag else []) + c.inside(tag)]

    def number(self, name: str) -> Any:
        """A data attribute holding a number as JSON (exactly as the audit holds it)."""
        return json.loads(self.attrs[name])


class Page(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[Element] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.elements.append(element)
        if self._open:
            self._open[-1].children.append(element)
        if tag not in VOID:
            self._open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self._open.pop()

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i].tag == tag:
                del self._open[i:]
                return

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.parts.append(data)

    def all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        """Elements with these attributes (`data_gate="x"` is data-gate="x"; "" only asks that it is there)."""
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [e for e in self.elements if (tag is None or e.tag == tag) and all(
            k in e.attrs and (v == "" or e.attrs[k] == v) for k, v in wanted.items())]

    def one(self, tag: str | None = None, **attrs: str) -> Element:
        found = self.all(tag, **attrs)
        assert len(found) == 1, (tag, attrs, len(found))
        return found[0]


# -- a synthetic audit trail -------------------------------------------------------------------------------------


def gate(name: str, scope: str, test: str, inputs: dict[str, Any], threshold: float, *, alpha: float = 0.05,
         beside: float | None = None, note: str = "") -> dict[str, Any]:
    full = {"test": test, **inputs}
    result, estimate = judge(test, full, threshold, alpha)
    return {"gate": name, "scope": scope, "inputs": full, "threshold": threshold, "alpha": alpha, "result": result,
            "estimate": estimate, "beside": beside, "note": f"{note or name}: {result}"}


def verdict(started: float, now: float, n: int, errors: int, p99: int, *, quality: bool = True,
            extra: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    slow = n // 50
    gates = [
        gate("critical_error_ratio", "step", "critical", {"n": n, "k": errors, "min_n": 20}, 0.5, beside=errors / n),
        gate("error_rate", "step", "proportion", {"n": n, "k_fail": errors, "k_pass": errors}, 0.02,
             beside=errors / n / 2, note=f"{errors}/{n} upstream attempts failed"),
        gate("latency_p99", "step", "proportion", {"n": n, "k_fail": slow, "k_pass": slow + 1}, 0.01,
             beside=410.5, note=f"p99 ~{p99} ms over {n} answers"),
        gate("ttft_p99", "step", "optional_proportion", {"n": 0, "k_fail": 0, "k_pass": 0, "min_n": 20}, 0.01),
        gate("cost", "step", "ratio", {"n_candidate": n, "mean_candidate": 900.0, "variance_candidate": 4e4,
                                       "n_baseline": 3 * n, "mean_baseline": 1000.0, "variance_baseline": 4e4,
                                       "n_star": 20}, 0.05, beside=1000.0),
        gate("error_rate", "block", "proportion", {"n": n // 2, "k_fail": errors // 2, "k_pass": errors // 2}, 0.02,
             alpha=block_alpha(0.05, 1), beside=None),
        *extra,
    ]
    if quality:
        checks = {"worse": 3, "better": 1, "min_n": 20, "n_star": 20, "min_n_fail": 30, "invalid_candidate": 5,
                  "expected_candidate": n // 4, "invalid_baseline": 3, "expected_baseline": n // 4}
        gates += [
            gate("quality_json", "step", "paired_difference", {"n": n // 5, **checks}, 0.02, beside=3 / (n // 4)),
            gate("quality_tools", "step", "paired_difference", {**checks, "n": 0, "worse": 0, "better": 0,
                                                                "invalid_candidate": 0, "expected_candidate": 0,
                                                                "invalid_baseline": 0, "expected_baseline": 0}, 0.02),
            gate("quality_win_rate", "step", "win_rate", {
                "judged": 40, "wins": 14, "ties": 17, "losses": 9, "flips": 6, "noise_pairs": 12,
                "noise_decisive": 3, "min_n": 30, "min_noise_pairs": 10, "max_noise_floor": 0.5}, 0.45, beside=0.25),
        ]
    result, critical, reason = decide([GateFigures.from_dict(g) for g in gates], requests_candidate=n,
                                      held_s=now - started, min_samples=20, min_step_s=5.0)
    return {"result": result, "critical": critical, "reason": reason, "gates": gates, "step_started_at": started,
            "evaluated_at": now, "requests_baseline": 3 * n, "requests_candidate": n, "min_samples": 20,
            "min_step_s": 5.0, "block": 1, "block_started_at": started}


def entry(kind: str, action: str, t: float, phase: tuple[str, str], weight_bp: int = 0, shadow: float = 0.0,
          reason: str = "", found: dict[str, Any] | None = None, actor: str = "gates") -> dict[str, Any]:
    return {"time": utc_now_iso(t), "kind": kind, "action": action, "actor": actor, "version": 1,
            "from_phase": phase[0], "to_phase": phase[1], "step_index": 0, "candidate_weight_bp": weight_bp,
            "shadow_percent": shadow, "reason": reason, "verdict": found}


def judged_pair(t: float, verdict_: str, baseline: str, candidate: str, reason: str = "") -> dict[str, Any]:
    """A stored example, as migration.judge.example writes it."""
    return example(t, "shadow", "What is 2+2?", baseline, candidate, verdict_, False, (reason, ""))  # type: ignore[arg-type]


def audit(*, quality: bool = True, hostile: str = "", extra: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    shadow_at, canary_at = T0 + 1, T0 + 30
    history = [
        entry("transition", "Create", T0, ("pending", "pending"), reason="created by ops", actor="ops"),
        entry("transition", "Start", shadow_at, ("pending", "shadow"), shadow=50.0, reason="started", actor="ops"),
    ]
    for i, n in enumerate((40, 120, 400)):
        history.append(entry("tick", "Tick", shadow_at + 9 * (i + 1), ("shadow", "shadow"), shadow=50.0,
                             found=verdict(shadow_at, shadow_at + 9 * (i + 1), n, n // 200, 380 + i,
                                           quality=quality, extra=extra)))
    history.append(entry("transition", "Tick", canary_at, ("shadow", "canary"), 2500, reason="gates passed"))
    history.append(entry("transition", "Pause", canary_at + 5, ("canary", "paused"), 2500, actor="ops",
                         reason=f"paused by ops: {hostile}"))
    history.append(entry("transition", "Resume", canary_at + 6, ("paused", "canary"), 2500, actor="ops"))
    for i, (n, errors) in enumerate(((60, 1), (300, 2))):
        t = canary_at + 10 * (i + 1)
        history.append(entry("tick", "Tick", t, ("canary", "canary"), 2500,
                             found=verdict(canary_at + 6, t, n, errors, 455 + i, quality=quality, extra=extra)))
    return history


def migration(*, reason: str = "canary step 0", local_window: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "m1", "version": 4, "kill_switch": False, "auto_analysis": True, "local_window": local_window,
        "spec": {"id": "m1", "alias": "gpt-4", "baseline": {"provider": "legacy", "model": "old"},
                 "candidate": {"provider": "modern", "model": "new"},
                 "gates": {"error_rate": 0.02, "p99_ms": 800.0, "ttft_p99_ms": 800.0, "cost_increase": 0.05}},
        "state": {"phase": "canary", "step_index": 0, "candidate_weight_bp": 2500, "shadow_percent": 0.0,
                  "version": 4, "reason": reason},
    }


def ticks_of(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in history if e["kind"] == "tick"]


# -- the tests -----------------------------------------------------------------------------------------------------


def test_the_page_needs_nothing_from_elsewhere() -> None:
    page_text = render_report(migration(), audit())
    page = Page(page_text)
    assert not page.all("script") and not page.all("link") and not page.all("img") and not page.all("iframe")
    linking = {"src", "href", "srcset", "xlink:href", "action", "formaction", "poster", "background"}
    assert not [e for e in page.elements if linking & set(e.attrs)]
    assert "url(" not in page_text and "@import" not in page_text and "//" not in page_text.replace("://", "")
    policy = page.one("meta", http_equiv="Content-Security-Policy").attrs["content"]
    assert policy.startswith("default-src 'none'")
    assert page_text.startswith("<!DOCTYPE html>")


def test_the_gates_table_is_the_last_verdict_exactly() -> None:
    history = audit()
    page = Page(render_report(migration(), history))
    last = ticks_of(history)[-1]["verdict"]
    rows = page.all("tr", data_gate="")
    assert [(r.attrs["data-gate"], r.attrs["data-scope"]) for r in rows] == sorted(
        ((g["gate"], g["scope"]) for g in last["gates"]), key=lambda pair: pair[1] != "step")
    for g in last["gates"]:
        row = page.one("tr", data_gate=g["gate"], data_scope=g["scope"])
        assert row.attrs["data-result"] == g["result"]
        for key in ("estimate", "threshold", "alpha", "beside"):
            assert row.number(f"data-{key}") == g[key], (g["gate"], key)
        assert json.loads(row.attrs["data-inputs"]) == g["inputs"]
        bounds = confidence_bounds(g)
        assert (row.number("data-lower"), row.number("data-upper")) == (bounds or (None, None))
    summary = page.one("section", id="summary")
    assert summary.attrs["data-result"] == last["result"] and summary.attrs["data-ticks"] == "5"
    assert summary.attrs["data-verified"] == "true"  # the synthetic verdicts recompute, as real ones must
    error_row = page.one("tr", data_gate="error_rate", data_scope="step")
    assert f"{last['gates'][1]['estimate']:.2%}" in error_row.text


@pytest.mark.parametrize("test", ["proportion", "mean", "ratio", "paired_difference", "win_rate"])
def test_bounds_agree_with_each_gate_test(test: str) -> None:
    """Over many inputs: a gate fails only when its bounds are wholly over the threshold (under it for the win
    rate), passes only when they are wholly on the other side; and for the rate tests, the converse of failing."""
    rng = random.Random(7)
    higher_is_better = test == "win_rate"
    seen: set[str] = set()
    for _ in range(400):
        threshold, alpha = rng.choice((0.01, 0.02, 0.05, 0.2, 0.45)), rng.choice((0.005, 0.05))
        n = rng.randint(0, 3000)
        inputs: dict[str, Any]
        if test == "proportion":
            k = rng.randint(0, n // rng.choice((1, 5, 20, 100)) if n else 0)
            inputs = {"n": n, "k_fail": k, "k_pass": min(n, k + rng.randint(0, 3))}
        elif test == "mean":
            inputs = {"n": n, "mean": rng.uniform(-0.2, 0.3), "variance": rng.uniform(0, 0.05), "n_star": 50}
        elif test == "ratio":
            inputs = {"n_candidate": n, "mean_candidate": rng.uniform(500, 1500),
                      "variance_candidate": 1e4 * rng.random(), "n_baseline": rng.randint(0, 3000),
                      "mean_baseline": 1000.0, "variance_baseline": 1e4, "n_star": 50}
        elif test == "paired_difference":
            worse = rng.randint(0, n // 3 if n else 0)
            inputs = {"n": n, "worse": worse, "better": rng.randint(0, n - worse), "min_n": 50, "n_star": 50,
                      "min_n_fail": 30}
        else:
            n = n // 10
            wins = rng.randint(0, n)
            ties = rng.randint(0, n - wins)
            inputs = {"judged": n, "wins": wins, "ties": ties, "losses": n - wins - ties, "flips": 0, "min_n": 30,
                      "noise_pairs": 20, "noise_decisive": 2, "min_noise_pairs": 10, "max_noise_floor": 0.5}
        inputs["test"] = test
        result, _ = judge(test, inputs, threshold, alpha)
        seen.add(result)
        bounds = confidence_bounds({"inputs": inputs, "alpha": alpha})
        if bounds is None:
            assert result in ("inconclusive", "skipped"), inputs
            continue
        lower, upper = bounds
        assert lower <= upper
        bad, good = (upper < threshold, lower > threshold) if higher_is_better else (lower > threshold,
                                                                                    upper < threshold)
        if result == "fail":
            assert bad, (inputs, threshold, bounds)
        if result == "pass":
            assert good, (inputs, threshold, bounds)
        if test in ("proportion", "mean", "ratio") and abs(lower - threshold) > 1e-9:
            assert (result == "fail") == bad, (inputs, threshold, bounds, result)
    assert {"pass", "fail"} <= seen, seen  # the inputs reached both decisions


def test_charts_draw_every_tick_step_by_step() -> None:
    history = audit()
    page = Page(render_report(migration(), history))
    ticks = ticks_of(history)
    last = ticks[-1]["verdict"]
    error = page.one("g", data_series="error_rate.estimate")
    assert error.number("data-count") == len(ticks) and error.number("data-last") == last["gates"][1]["estimate"]
    assert len(error.inside("polyline")) == 2  # one line per step: the figures restart with each step
    assert page.one("g", data_series="error_rate.beside").number("data-last") == last["gates"][1]["beside"]
    assert page.one("g", data_series="latency_p99.baseline").number("data-last") == 410.5
    assert page.one("g", data_series="latency_p99.candidate").number("data-last") == 456  # read from the note
    assert page.one("g", data_series="cost.mean_candidate").number("data-last") == 900.0
    assert page.one("g", data_series="quality_win_rate.estimate").number("data-last") == (14 + 17 / 2) / 40
    assert page.one(data_chart="ttft_p99").attrs["data-count"] == "0"
    labels = [e.attrs["data-label"] for e in page.all("g", data_label="")]
    assert labels == ["pending", "shadow 50%", "canary 25%", "paused", "canary 25%"]
    error_chart = page.one("svg", data_chart="error_rate")
    assert [e.number("data-threshold") for e in error_chart.inside("line") if "data-threshold" in e.attrs] == [0.02]


def test_quality_results_checks_and_the_most_divergent_pairs() -> None:
    history = audit()
    examples = [
        judged_pair(T0 + 41, "tie", "Four.", "Four."),
        judged_pair(T0 + 42, "candidate", "4", "The answer is 4."),
        judged_pair(T0 + 43, "baseline", "4", "I cannot help with that.", reason="refused"),
        judged_pair(T0 + 44, "baseline", "4", "5"),
    ]
    page = Page(render_report(migration(), history, examples))
    judge_block = page.one(id="quality-judge")
    win = next(g for g in ticks_of(history)[-1]["verdict"]["gates"] if g["gate"] == "quality_win_rate")
    for key in ("judged", "wins", "ties", "losses", "flips", "noise_pairs", "noise_decisive"):
        assert judge_block.number(f"data-{key.replace('_', '-')}") == win["inputs"][key]
    assert judge_block.number("data-estimate") == win["estimate"] and judge_block.attrs["data-result"] == win["result"]
    assert "in 3 of 12 noise pairs (25.0%)" in " ".join(judge_block.text.split())
    assert "candidate wins 14 (35.0%)" in page.one(id="quality").text
    json_row = page.one("tr", data_check="quality_json")
    assert (json_row.number("data-n"), json_row.number("data-worse"), json_row.number("data-better")) == (60, 3, 1)
    assert "5/75 (6.67%)" in json_row.text and "3/75 (4.00%)" in json_row.text
    assert page.one("tr", data_check="quality_tools").attrs["data-result"] == "skipped"
    pairs = page.one(id="judged-pairs")
    assert pairs.attrs["data-count"] == "4"
    assert [e.attrs["data-verdict"] for e in page.all("div", data_verdict="")] == [
        "baseline", "baseline", "candidate", "tie"]
    assert pairs.text.index("5") < pairs.text.index("I cannot help with that.")  # least similar loss first


def test_without_quality_gates_or_examples_it_says_so() -> None:
    page = Page(render_report(migration(), audit(quality=False)))
    assert "Not judged" in page.one(id="quality-judge").text
    assert "No deterministic checks" in page.one(id="quality-checks").text
    assert page.one(id="judged-pairs").text.startswith("No examples stored")


def test_hostile_text_comes_out_escaped() -> None:
    rogue_gate = gate(HOSTILE, "step", "proportion", {"n": 10, "k_fail": 0, "k_pass": 0}, 0.1, note=HOSTILE)
    history = audit(hostile=HOSTILE, extra=[rogue_gate])
    examples = [judged_pair(T0 + 41, HOSTILE, HOSTILE, "</pre>" + HOSTILE, reason=HOSTILE)]
    state_reason = f"paused by ops: {HOSTILE}"
    text = render_report(migration(reason=state_reason), history, examples)
    page = Page(text)
    assert "<script" not in text and "<img" not in text
    assert not page.all("script") and not page.all("img")
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    # The text itself survives, as text: in the state, the transitions, the gates table, the chart, the pairs.
    assert HOSTILE in page.one(id="summary").text
    assert page.one("tr", data_action="Pause").text.endswith(state_reason)
    assert page.one("tr", data_gate=HOSTILE).attrs["data-gate"] == HOSTILE
    assert page.one("svg", data_chart=HOSTILE) is not None
    assert ("</pre>" + HOSTILE) in page.one(id="judged-pairs").text


def test_per_arm_latency_and_errors_of_the_current_step_come_from_the_window() -> None:
    base = ArmWindow.of([Sample("ok", ms, None, 1000) for ms in range(100, 300)] + [Sample("error")])
    ok: list[Kind] = ["ok"]
    error: list[Kind] = ["error"]
    attempts = ok * 100 + error * 2
    cand = ArmWindow.of([Sample("ok", ms, 40.0, 800) for ms in range(150, 350, 2)], attempts=attempts)
    window = StepWindow(T0 + 36, base, cand)
    page = Page(render_report(migration(local_window=window.to_dict()), audit()))
    for name, arm in (("baseline", base), ("candidate", cand)):
        row = page.one("tr", data_arm=name)
        assert row.number("data-p50-ms") == arm.latency.quantile(0.5)
        assert row.number("data-p99-ms") == arm.latency.quantile(0.99)
        assert (row.number("data-requests"), row.number("data-errors")) == (arm.requests, arm.errors)
        assert row.number("data-attempt-error-rate") == arm.attempt_error_rate
        assert row.number("data-mean-cost-micros") == arm.cost.mean()
    assert page.one("tr", data_arm="candidate").number("data-ttft-p50-ms") == cand.ttft.quantile(0.5)


def test_an_audit_without_ticks_renders() -> None:
    history = [entry("transition", "Create", T0, ("pending", "pending"), reason="created", actor="ops")]
    page = Page(render_report({**migration(), "state": {"phase": "pending", "version": 0, "reason": ""}}, history))
    assert "No analysis tick yet" in page.one(id="gates").text
    assert page.one(data_chart="error_rate").attrs["data-count"] == "0"
    assert page.one(id="summary").attrs["data-ticks"] == "0"
    assert Page(render_report({}, [])).one(id="summary").attrs["data-entries"] == "0"


def test_a_long_audit_is_thinned_but_ends_on_its_last_tick() -> None:
    history = [entry("transition", "Start", T0, ("pending", "shadow"), shadow=10.0)]
    for i in range(1, 3001):
        history.append(entry("tick", "Tick", T0 + 10 * i, ("shadow", "shadow"), shadow=10.0,
                             found=verdict(T0, T0 + 10 * i, 20 + i, i // 100, 400, quality=False)))
    started = time.perf_counter()
    page = Page(render_report(migration(), history))
    assert time.perf_counter() - started < 10
    series = page.one("g", data_series="error_rate.estimate")
    assert series.number("data-count") == MAX_POINTS
    assert series.number("data-last") == history[-1]["verdict"]["gates"][1]["estimate"]
    assert page.one(id="summary").attrs["data-ticks"] == "3000"


def test_the_candidate_p99_comes_from_the_gates_inputs_and_else_its_note() -> None:
    from migration.report_figures import noted_p99

    assert noted_p99({"inputs": {"p99_ms": 412.5}, "note": "p99 ~400 ms over 10 answers"}) == 412.5
    assert noted_p99({"inputs": {"p99_ms": None}, "note": "p99 ~400 ms over 10 answers"}) == 400.0
    assert noted_p99({"inputs": {}, "note": "no answers"}) is None
