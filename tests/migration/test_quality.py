"""The cheap quality checks, their counts in a window, and the quality gates' tests (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from config.migration import GateThresholds, StepPlan
from migration.compare import AnswerSummary
from migration.gates import evaluate, judge
from migration.quality import QualityCounts, check, expect
from migration.window import ArmWindow, StepWindow

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
CHAT_SCHEMA = {"response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}}}
RESPONSES_SCHEMA = {"text": {"format": {"type": "json_schema", "name": "c", "schema": SCHEMA}}}
CHAT_TOOLS = {"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}]}
RESPONSES_TOOLS = {"tools": [{"type": "function", "name": "get_weather", "parameters": SCHEMA}]}


def answer(text: str = "", *, calls: tuple[tuple[str, str], ...] = (), finish: str = "stop", status: int = 200,
           refusal: bool = False) -> AnswerSummary:
    return AnswerSummary(status, 0.1, finish_reason=finish, text=text, tool_calls=calls, refusal=refusal)


@pytest.mark.parametrize("request_body", [CHAT_SCHEMA, RESPONSES_SCHEMA])
def test_json_answers_are_parsed_and_validated_against_the_schema(request_body: dict[str, Any]) -> None:
    wanted = expect(request_body)
    assert check(answer('{"city": "Paris"}'), wanted).json_invalid is False  # type: ignore[union-attr]
    assert check(answer('{"town": "Paris"}'), wanted).json_invalid is True  # type: ignore[union-attr]
    assert check(answer("Paris, sunny"), wanted).json_invalid is True  # type: ignore[union-attr]


def test_json_object_mode_only_needs_json_and_plain_requests_need_nothing() -> None:
    wanted = expect({"response_format": {"type": "json_object"}})
    assert check(answer('{"anything": 1}'), wanted).json_invalid is False  # type: ignore[union-attr]
    assert check(answer("nope"), expect({})).json_invalid is None  # type: ignore[union-attr]


@pytest.mark.parametrize("request_body", [CHAT_TOOLS, RESPONSES_TOOLS])
def test_tool_calls_need_known_names_and_fitting_arguments(request_body: dict[str, Any]) -> None:
    wanted = expect(request_body)
    good = check(answer(calls=(("get_weather", '{"city": "Paris"}'),)), wanted)
    assert good is not None and good.tools_invalid is False and not good.empty
    for calls in ((("get_weather", '{"town": "Paris"}'),), (("get_weather", '{"city": '),), (("fly", "{}"),),
                  (("get_weather", "[1]"),)):
        found = check(answer(calls=calls), wanted)
        assert found is not None and found.tools_invalid is True, calls
    assert check(answer("no calls"), wanted).tools_invalid is None  # type: ignore[union-attr]


def test_refusals_empty_answers_and_cut_offs() -> None:
    found = check(answer("", refusal=True), expect({}))
    assert found is not None and found.refusal and not found.empty
    assert check(answer("  "), expect({})).empty  # type: ignore[union-attr]
    assert check(answer("long", finish="length"), expect({})).cut_off  # type: ignore[union-attr]
    assert check(answer("x", status=502), expect({})) is None  # errors are the error gates' business


def test_pair_counts_say_which_side_failed() -> None:
    wanted = expect(CHAT_SCHEMA)
    good, bad = check(answer('{"city": "x"}'), wanted), check(answer("x"), wanted)
    assert good is not None and bad is not None
    worse = QualityCounts.of_pair(baseline=good, candidate=bad)
    better = QualityCounts.of_pair(baseline=bad, candidate=good)
    assert (worse.json_pairs, worse.json_worse, worse.json_better, worse.json_invalid) == (1, 1, 0, 1)
    assert (better.json_pairs, better.json_worse, better.json_better, better.json_invalid) == (1, 0, 1, 0)
    total = worse.plus(better)
    assert (total.checked, total.json_pairs, total.json_worse, total.json_better) == (2, 2, 1, 1)
    assert total.minus(better) == QualityCounts(**{k: int(v) for k, v in worse.to_dict().items()})


def test_quality_counts_travel_with_the_window() -> None:
    counts = QualityCounts(checked=3, json_pairs=2, json_worse=1, judged=4, wins=1, ties=2, losses=1)
    window = ArmWindow(requests=3, quality=counts)
    again = ArmWindow.from_dict(window.to_dict())
    assert again.quality == counts
    # A window stored before quality was counted reads as none.
    old = window.to_dict()
    del old["quality"]
    assert ArmWindow.from_dict(old).quality == QualityCounts()


def paired(n: int, worse: int, better: int = 0) -> dict[str, Any]:
    return {"n": n, "worse": worse, "better": better, "min_n": 200, "n_star": 200, "min_n_fail": 30}


@pytest.mark.parametrize(("inputs", "result"), [
    (paired(0, 0), "skipped"),
    (paired(20, 20), "skipped"),  # clear, but too few pairs to judge at all
    (paired(100, 30), "fail"),  # 30 % worse pairs against a 2 % margin, before the step's minimum
    (paired(100, 1), "skipped"),  # looks fine, but too few pairs to pass: the gate must not hold the step
    (paired(2000, 10, 5), "pass"),
    (paired(2000, 60, 0), "inconclusive"),  # 3 %: over the margin, not yet shown
])
def test_the_paired_difference_test(inputs: dict[str, Any], result: str) -> None:
    assert judge("paired_difference", {"test": "paired_difference", **inputs}, 0.02, 0.005)[0] == result


def judged(n: int, wins: int, ties: int, *, noise: tuple[int, int] = (20, 4)) -> dict[str, Any]:
    return {"judged": n, "wins": wins, "ties": ties, "losses": n - wins - ties, "flips": 0,
            "noise_pairs": noise[0], "noise_decisive": noise[1], "min_n": 30, "min_noise_pairs": 10,
            "max_noise_floor": 0.5}


@pytest.mark.parametrize(("inputs", "result"), [
    (judged(0, 0, 0), "inconclusive"),
    (judged(20, 0, 0), "inconclusive"),  # under min_judged
    (judged(200, 20, 20), "fail"),  # win rate 0.15
    (judged(400, 20, 360), "pass"),  # mostly ties: equivalent
    (judged(400, 20, 360, noise=(5, 1)), "inconclusive"),  # the noise floor is not measured yet
    (judged(400, 20, 360, noise=(20, 15)), "inconclusive"),  # the judge prefers at random: too noisy to pass
    (judged(400, 0, 0, noise=(20, 15)), "fail"),  # noise cannot hide a candidate that loses every time
])
def test_the_win_rate_test(inputs: dict[str, Any], result: str) -> None:
    assert judge("win_rate", inputs, 0.45, 0.005)[0] == result


def test_a_candidate_that_breaks_json_fails_the_step() -> None:
    plan = StepPlan(min_step_s=60, max_step_s=3600, min_samples=50)
    counts = QualityCounts(checked=300, json_expected=300, json_invalid=90, json_pairs=300, json_worse=90)
    base = ArmWindow(requests=300, quality=QualityCounts(checked=300, json_expected=300))
    verdict = evaluate(StepWindow(0.0, base, ArmWindow(requests=300, quality=counts)), GateThresholds(), plan, 10.0)
    assert verdict.result == "fail" and verdict.gate("quality_json").result == "fail"
    assert verdict.gate("quality_json").beside == 0.0 and "invalid 30.0% vs 0.0%" in verdict.gate("quality_json").note


def test_the_win_rate_gate_is_there_only_with_a_judge() -> None:
    window = StepWindow(0.0, ArmWindow(requests=10), ArmWindow(requests=10))
    plan = StepPlan(min_step_s=60, max_step_s=3600, min_samples=50)
    assert "quality_win_rate" not in {g.gate for g in evaluate(window, GateThresholds(), plan, 1.0).gates}
    with_judge = GateThresholds.model_validate({"quality": {"judge": "judge-model"}})
    assert evaluate(window, with_judge, plan, 1.0).gate("quality_win_rate").result == "inconclusive"


def test_a_schema_the_checker_cannot_read_faults_no_answer() -> None:
    broken = {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "no-such-type"}}},
              "tools": [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "#/nowhere"}}}]}
    wanted = expect(broken)
    assert check(answer('{"a": 1}'), wanted).json_invalid is False  # type: ignore[union-attr]
    assert check(answer(calls=(("f", "{}"),)), wanted).tools_invalid is False  # type: ignore[union-attr]
