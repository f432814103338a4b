"""Plans: extracting JSON from replies, every validation rule, the strict schema, re-plan guard, shape keys."""

from __future__ import annotations

from typing import Any

import pytest

from planner.extract import extract_json
from planner.plan import (
    Plan,
    PlanLimits,
    Task,
    plan_json_schema,
    response_format,
    topological_order,
    validate_plan,
)
from planner.reuse import normalised_shape, repeats_work


def task(task_id: str, *deps: str, **fields: Any) -> dict[str, Any]:
    return {"id": task_id, "instruction": f"do {task_id}", "deps": list(deps), "tier": "cheap", "max_tokens": 256,
            **fields}


def plan(*tasks: dict[str, Any], final: str = "combine") -> dict[str, Any]:
    return {"tasks": list(tasks), "final_instruction": final}


def errors_of(obj: Any, **kwargs: Any) -> list[str]:
    result, errors = validate_plan(obj, **kwargs)
    assert result is None and errors
    return errors


def one_error(obj: Any, *needles: str, **kwargs: Any) -> str:
    errors = errors_of(obj, **kwargs)
    assert len(errors) == 1, errors
    for needle in needles:
        assert needle in errors[0]
    return errors[0]


# extract_json ---------------------------------------------------------------------------------

GOOD = '{"tasks": [{"id": "t1"}], "final_instruction": "use {braces} and \\"quotes\\" freely"}'


@pytest.mark.parametrize(
    "text",
    [
        GOOD,
        f"  \n{GOOD}\n ",
        f"```json\n{GOOD}\n```",
        f"```\n{GOOD}\n```",
        f"Sure! Here is the plan:\n```json\n{GOOD}\n```\nLet me know {{if}} you need more.",
        f"Here you go: {GOOD} -- hope this helps",
        f"Think {{step by step}} first. {GOOD}",  # a balanced non-JSON brace pair before the object
        f"An unclosed {{ brace, then the plan: {GOOD}",
    ],
)
def test_extract_json_finds_the_object(text: str) -> None:
    obj, error = extract_json(text)
    assert error is None
    assert obj == {"tasks": [{"id": "t1"}], "final_instruction": 'use {braces} and "quotes" freely'}


def test_extract_json_brace_matching_ignores_braces_and_escapes_inside_strings() -> None:
    obj, error = extract_json('note: {"a": "} \\\\", "b": "\\" }"} trailing }')
    assert error is None and obj == {"a": "} \\", "b": '" }'}


def test_extract_json_returns_the_first_object_not_a_nested_one() -> None:
    obj, _ = extract_json('{"outer": {"inner": 1}} {"second": 2}')
    assert obj == {"outer": {"inner": 1}}


def test_extract_json_skips_an_invalid_object_whole_rather_than_returning_its_inner_object() -> None:
    obj, error = extract_json("{'tasks': [{\"id\": \"t1\"}]}")
    assert obj is None and error is not None and "invalid JSON" in error


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("I cannot help with that.", "no JSON object"),
        ("[1, 2, 3]", "expected a JSON object"),
        ('"just a string"', "expected a JSON object"),
        ('```json\n{"tasks": [1, 2,\n```', "never closed"),
        ("{tasks: []}", "invalid JSON"),
        ('Plan: {"tasks": [],}', "invalid JSON"),
    ],
)
def test_extract_json_reports_garbage(text: str, needle: str) -> None:
    obj, error = extract_json(text)
    assert obj is None
    assert error is not None and needle in error


# validate_plan: accepted plans -----------------------------------------------------------------


def test_a_valid_plan_becomes_frozen_tasks_in_order() -> None:
    result, errors = validate_plan(plan(task("a"), task("b", "a", tier="strong"), task("c", "a", "b")))
    assert errors == []
    assert result == Plan(
        tasks=(
            Task("a", "do a", (), "cheap", 256),
            Task("b", "do b", ("a",), "strong", 256),
            Task("c", "do c", ("a", "b"), "cheap", 256),
        ),
        final_instruction="combine",
    )
    assert result.to_dict() == plan(task("a"), task("b", "a", tier="strong"), task("c", "a", "b"))


def test_a_replan_may_depend_on_earlier_rounds_results() -> None:
    result, errors = validate_plan(plan(task("t9", "t1")), known_result_ids={"t1"})
    assert errors == [] and result is not None and result.tasks[0].deps == ("t1",)


def test_limits_exactly_reached_are_allowed() -> None:
    limits = PlanLimits(max_tasks_per_round=3, max_tasks_total=5, max_depth=3, max_fan_in=2, max_task_tokens=100)
    obj = plan(task("a", max_tokens=100), task("b", "a", max_tokens=1), task("c", "a", "b", max_tokens=50))
    assert validate_plan(obj, limits, tasks_done_before=2)[1] == []


# validate_plan: every error -----------------------------------------------------------------


@pytest.mark.parametrize("obj", [None, [], "plan", 3])
def test_a_plan_must_be_an_object(obj: Any) -> None:
    one_error(obj, "must be a JSON object")


def test_top_level_shape_errors() -> None:
    assert one_error({"final_instruction": "x"}, "'tasks' must be a list")
    assert one_error(plan(task("a"), final="  "), "final_instruction")
    assert one_error(plan(), "at least one task")
    assert one_error({**plan(task("a")), "reasoning": "..."}, "unexpected top-level key 'reasoning'")


def test_missing_and_unexpected_task_keys_name_the_task() -> None:
    bad = task("a")
    del bad["tier"]
    one_error(plan(bad), "tasks[0] (id 'a')", "missing required key 'tier'")
    one_error(plan(task("a", dependencies=[])), "tasks[0] (id 'a')", "unexpected key 'dependencies'")
    one_error(plan("not a task"), "tasks[0]", "must be an object")


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"id": 7}, "id must be"),
        ({"id": ""}, "id must be"),
        ({"id": 'a">>>'}, "id must be"),
        ({"id": "x" * 65}, "id must be"),
        ({"instruction": ""}, "instruction must be a non-empty string"),
        ({"instruction": "   "}, "instruction must be a non-empty string"),
        ({"instruction": None}, "instruction must be a non-empty string"),
        ({"deps": "t0"}, "deps must be a list"),
        ({"deps": [1]}, "deps must be a list"),
        ({"tier": "premium"}, "tier 'premium' is not one of 'cheap', 'strong'"),
        ({"tier": None}, "tier None"),
        ({"max_tokens": 0}, "max_tokens must be an integer from 1 to 4096"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": 4097}, "max_tokens"),
        ({"max_tokens": 12.5}, "max_tokens"),
        ({"max_tokens": "100"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
    ],
)
def test_field_type_and_value_errors(fields: dict[str, Any], needle: str) -> None:
    one_error(plan(task("t1", **fields)), "tasks[0]", needle)


def test_limits_narrow_the_tiers() -> None:
    cheap_only = PlanLimits(tiers=("cheap",))
    one_error(plan(task("a", tier="strong")), "tier 'strong' is not one of 'cheap'", limits=cheap_only)


def test_duplicate_ids() -> None:
    one_error(plan(task("a"), task("b"), task("a")), "tasks[2] (id 'a')", "duplicate id 'a'", "tasks[0]")


def test_an_id_may_not_reuse_an_earlier_rounds_result() -> None:
    one_error(plan(task("t1")), "tasks[0] (id 't1')", "earlier round", known_result_ids={"t1"})


def test_unknown_dependency() -> None:
    one_error(plan(task("a"), task("b", "zzz")), "tasks[1] (id 'b')", "unknown id 'zzz'")


def test_forward_reference() -> None:
    one_error(plan(task("a", "b"), task("b")), "tasks[0] (id 'a')", "depends on 'b'", "listed later (tasks[1])")


def test_self_reference() -> None:
    one_error(plan(task("a"), task("b", "b")), "tasks[1] (id 'b')", "depends on itself")


def test_repeated_dependency() -> None:
    one_error(plan(task("a"), task("b", "a", "a")), "tasks[1] (id 'b')", "more than once")


def test_a_cycle_is_reported_as_a_forward_reference_and_by_the_cycle_check() -> None:
    errors = errors_of(plan(task("a", "c"), task("b", "a"), task("c", "b")))
    assert any("tasks[0] (id 'a'): depends on 'c', which is listed later" in e for e in errors)
    assert any("cycle" in e and "a, b, c" in e for e in errors)


def test_kahn_finds_cycles_and_whatever_hangs_off_them() -> None:
    order, stuck = topological_order({"a": [], "b": ["a", "d"], "c": ["b"], "d": ["c"], "e": ["a"], "f": ["d"]})
    assert set(order) == {"a", "e"}
    assert sorted(stuck) == ["b", "c", "d", "f"]
    order, stuck = topological_order({"x": ["y"], "y": [], "z": ["x", "y", "unknown"]})
    assert stuck == [] and order.index("y") < order.index("x") < order.index("z")


def test_too_many_tasks_in_one_round() -> None:
    limits = PlanLimits(max_tasks_per_round=3)
    one_error(plan(*(task(f"t{i}") for i in range(4))), "4 tasks", "limit of 3 per round", limits=limits)


def test_too_many_tasks_counting_earlier_rounds() -> None:
    limits = PlanLimits(max_tasks_total=10)
    one_error(plan(task("a"), task("b"), task("c")), "8 tasks already ran", "at most 2 more", limits=limits,
              tasks_done_before=8)


def test_depth_limit_names_the_chain() -> None:
    chain = [task("t0")] + [task(f"t{i}", f"t{i - 1}") for i in range(1, 5)]
    assert validate_plan(plan(*chain[:4]), PlanLimits(max_depth=4))[1] == []
    one_error(plan(*chain, task("side", "t0")), "tasks[4] (id 't4')", "t0 -> t1 -> t2 -> t3 -> t4", "limit of 4",
              limits=PlanLimits(max_depth=4))


def test_fan_in_limit() -> None:
    sources = [task(f"s{i}") for i in range(4)]
    ok = plan(*sources[:3], task("join", "s0", "s1", "s2"))
    assert validate_plan(ok, PlanLimits(max_fan_in=3))[1] == []
    too_many = plan(*sources, task("join", "s0", "s1", "s2", "s3"))
    one_error(too_many, "tasks[4] (id 'join')", "depends on 4 tasks", "limit of 3", limits=PlanLimits(max_fan_in=3))


def test_all_errors_are_reported_together_and_capped() -> None:
    errors = errors_of(plan(task("a", tier="x"), task("b", "zzz", max_tokens=0)))
    assert len(errors) == 3  # bad tier, bad max_tokens, and b's deps still checked: unknown id
    many = errors_of(plan(*(task(f"t{i}", tier="x") for i in range(30))), limits=PlanLimits(max_tasks_per_round=64))
    assert len(many) == 21 and many[-1] == "... and 10 more errors"


# schema -----------------------------------------------------------------------------------------


def _objects(schema: Any) -> list[dict[str, Any]]:
    if isinstance(schema, dict):
        found = [schema] if schema.get("type") == "object" else []
        return found + [o for value in schema.values() for o in _objects(value)]
    if isinstance(schema, list):
        return [o for value in schema for o in _objects(value)]
    return []


def test_schema_is_strict_mode_compatible() -> None:
    objects = _objects(plan_json_schema())
    assert len(objects) == 2
    for obj in objects:
        assert obj["additionalProperties"] is False
        assert sorted(obj["required"]) == sorted(obj["properties"])
    task_schema = plan_json_schema(PlanLimits(tiers=("cheap",)))["properties"]["tasks"]["items"]
    assert task_schema["properties"]["tier"]["enum"] == ["cheap"]
    assert response_format()["json_schema"]["strict"] is True


def test_a_plan_written_to_the_schema_validates() -> None:
    props = plan_json_schema()["properties"]["tasks"]["items"]["properties"]
    assert set(props) == set(task("a"))


# repeats_work -------------------------------------------------------------------------------


def _plan_of(*instructions: str) -> list[str]:
    """A new plan's task instructions."""
    return list(instructions)


def test_repeats_work_on_normalised_equality() -> None:
    done = ["Summarise section 1.", "Translate the summary to French"]
    assert repeats_work(_plan_of("  summarise SECTION 1 "), done)
    assert repeats_work(_plan_of("Summarise section 1", "translate the summary to french!"), done)


def test_repeats_work_on_high_overlap_only() -> None:
    done = ["summarise section 1", "summarise section 2", "summarise section 3", "summarise section 4"]
    four_of_five = _plan_of(*done, "check the numbers")
    assert repeats_work(four_of_five, done)  # 80 %
    three_of_five = _plan_of(*done[:3], "check the numbers", "write the conclusion")
    assert not repeats_work(three_of_five, done)


def test_new_work_is_not_a_repeat() -> None:
    assert not repeats_work(_plan_of("summarise section 2"), ["summarise section 1"])
    assert not repeats_work(_plan_of("anything"), [])


def test_trivial_rephrasing_still_counts_as_a_repeat() -> None:
    done = ["list the three main risks of the project in the attached proposal document"]
    rephrased = "List the three main risks of the project in the attached proposal document now"
    assert repeats_work(_plan_of(rephrased), done)


# normalised_shape ---------------------------------------------------------------------------------


def convo(user: str, system: str = "You are a helpful assistant.") -> list[dict[str, Any]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def test_same_template_different_values_same_key() -> None:
    a = convo('Email alice@example.com about order 12345 totalling $19.99, subject "Late delivery", '
              "see https://shop.example/o/12345?ref=a and ticket AB12CD, due 2024-05-01.")
    b = convo('email  BOB.SMITH@corp.example.org about order 9876543210 totalling $7, subject "Refund request", '
              "see http://other.example/x and ticket ZX9, due 2025-12-31.")
    assert normalised_shape(a) == normalised_shape(b)


def test_key_is_sha256_hex() -> None:
    key = normalised_shape(convo("hello"))
    assert len(key) == 64 and int(key, 16) >= 0


def test_different_goal_different_key() -> None:
    base = convo("Email alice@example.com about order 12345.")
    assert normalised_shape(base) != normalised_shape(convo("Cancel order 12345 for alice@example.com."))
    assert normalised_shape(base) != normalised_shape(convo("Email alice@example.com about order 12345.", "Be terse."))
    swapped = [{"role": "assistant", "content": m["content"]} for m in base]
    assert normalised_shape(base) != normalised_shape(swapped)


def test_content_parts_are_read_like_strings() -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "Summarise item 4"}]}]
    assert normalised_shape(parts) == normalised_shape([{"role": "user", "content": "summarise item 99"}])
    with_image = [{"role": "user", "content": [{"type": "text", "text": "Summarise item 4"}, {"type": "image_url"}]}]
    assert normalised_shape(with_image) != normalised_shape(parts)


# Tool tasks -----------------------------------------------------------------------------------


TOOLS = ("get_weather", "search")


def tool_task(task_id: str, tool: str, arguments: Any, *deps: str) -> dict[str, Any]:
    return {"id": task_id, "tool": tool, "arguments": arguments, "deps": list(deps)}


def test_tool_tasks_mix_with_model_tasks() -> None:
    obj = {"tasks": [task("t1"), tool_task("w1", "get_weather", {"city": "${t1}"}, "t1"),
                     tool_task("w2", "search", '{"q": "bikes"}'), task("t3", "w1", "w2")],
           "final_instruction": "combine"}
    plan, errors = validate_plan(obj, tool_names=TOOLS)
    assert errors == [] and plan is not None
    w1, w2 = plan.tasks[1], plan.tasks[2]
    assert (w1.tool, w1.arguments, w1.deps) == ("get_weather", {"city": "${t1}"}, ("t1",))
    # Strict structured output gives the arguments as JSON text: read as the object.
    assert w2.arguments == {"q": "bikes"}
    # A plan round-trips through its dict (journal, run state, cache).
    again, errors = validate_plan(plan.to_dict(), tool_names=TOOLS)
    assert errors == [] and again == plan


def test_strict_output_tool_tasks_carry_null_model_fields_and_model_tasks_null_tool_fields() -> None:
    obj = {"tasks": [{**task("t1"), "tool": None, "arguments": None},
                     {**tool_task("w1", "search", '{"q": "x"}'), "instruction": "", "tier": "cheap", "max_tokens": 1}],
           "final_instruction": "combine"}
    plan, errors = validate_plan(obj, tool_names=TOOLS)
    assert errors == [] and plan is not None and plan.tasks[0].tool is None and plan.tasks[1].tool == "search"


@pytest.mark.parametrize(("raw", "wanted"), [
    (tool_task("w1", "fly", {}), "unknown tool 'fly' (available: get_weather, search)"),
    (tool_task("w1", "search", "{not json"), "arguments are not valid JSON"),
    (tool_task("w1", "search", ["a"]), "arguments must be a JSON object"),
    (tool_task("w1", "search", {"q": "${t9}"}), "arguments reference ${t9}, which is not one of this task's deps"),
    ({**task("t2"), "arguments": {"q": 1}}, "arguments belong to a tool task"),
])
def test_tool_task_errors_are_fit_for_a_repair(raw: dict[str, Any], wanted: str) -> None:
    plan, errors = validate_plan({"tasks": [raw], "final_instruction": "x"}, tool_names=TOOLS)
    assert plan is None and any(wanted in e for e in errors), errors


def test_without_tools_on_offer_a_tool_task_is_an_unexpected_key() -> None:
    plan, errors = validate_plan({"tasks": [tool_task("w1", "search", {})], "final_instruction": "x"})
    assert plan is None and any("unexpected key 'tool'" in e for e in errors)


def test_the_schema_with_tools_stays_strict() -> None:
    schema = plan_json_schema(tools=True)
    item = schema["properties"]["tasks"]["items"]
    assert item["required"] == ["id", "instruction", "deps", "tier", "max_tokens", "tool", "arguments"]
    assert item["additionalProperties"] is False
    assert "tool" not in plan_json_schema()["properties"]["tasks"]["items"]["properties"]


def test_answer_from_names_a_model_task_of_the_plan() -> None:
    obj = {"tasks": [task("t1"), tool_task("w1", "search", {}), task("t2", "t1", "w1")], "final_instruction": "x",
           "answer_from": "t2"}
    plan, errors = validate_plan(obj, tool_names=TOOLS)
    assert errors == [] and plan is not None and plan.answer_from == "t2"
    assert validate_plan(plan.to_dict(), tool_names=TOOLS)[0] == plan
    for wrong in ("w1", "nope", 3):
        plan, errors = validate_plan({**obj, "answer_from": wrong}, tool_names=TOOLS)
        assert plan is None and any("'answer_from' must be null or the id of a model task" in e for e in errors)
    assert validate_plan({**obj, "answer_from": None}, tool_names=TOOLS)[0] is not None
