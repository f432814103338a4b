"""Tool specs, the client's `tools` and `tool_choice`, argument references and checks (planner.tools)."""

from __future__ import annotations

from typing import Any

import pytest

from planner.tools import (
    ToolRequestError,
    check_tool_choice,
    client_tools,
    fill_references,
    make_spec,
    offers_tools,
    references,
)

CITY = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"], "additionalProperties": False}


def function(name: str, parameters: Any = CITY, **extra: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": "d", "parameters": parameters, **extra}}


def test_client_tools_become_specs() -> None:
    specs = client_tools({"tools": [function("get_weather"), function("noop", parameters={"type": "object"})]})
    assert [(s.name, s.is_client) for s in specs] == [("get_weather", True), ("noop", True)]
    assert specs[0].argument_errors({"city": "Paris", "days": 2}) == []


@pytest.mark.parametrize(("tools", "wanted"), [
    ("nope", "must be a list"),
    ([{"type": "custom", "custom": {"name": "grep"}}], "only tools of type 'function'"),
    ([function("bad name!")], "function.name"),
    ([function("twice"), function("twice")], "used twice"),
    ([function("broken", parameters={"type": "no-such-type"})], "not a valid JSON schema"),
])
def test_tools_a_plan_cannot_use_are_refused(tools: Any, wanted: str) -> None:
    with pytest.raises(ToolRequestError, match=wanted) as caught:
        client_tools({"tools": tools})
    assert caught.value.param == "tools"


@pytest.mark.parametrize("choice", [None, "auto", "none"])
def test_tool_choices_a_plan_honours(choice: Any) -> None:
    check_tool_choice({"tool_choice": choice})


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "x"}},
                                    {"type": "allowed_tools", "allowed_tools": {}}])
def test_tool_choices_a_plan_cannot_honour(choice: Any) -> None:
    with pytest.raises(ToolRequestError) as caught:
        check_tool_choice({"tool_choice": choice})
    assert caught.value.param == "tool_choice"


def test_tool_choice_none_withholds_the_tools() -> None:
    assert offers_tools({"tools": [function("a")]})
    assert not offers_tools({"tools": [function("a")], "tool_choice": "none"})
    assert not offers_tools({"tools": []})


def test_argument_errors_name_the_place() -> None:
    spec = make_spec("get_weather", "", CITY)
    errors = spec.argument_errors({"town": "Paris", "days": "two"})
    assert any(e.startswith("days:") for e in errors)
    assert any("city" in e and "required" in e for e in errors)
    assert any("town" in e for e in errors)
    assert spec.argument_errors(["Paris"]) == ["the arguments of 'get_weather' must be a JSON object"]


def test_references_are_found_and_filled() -> None:
    arguments = {"city": "${t1}", "note": "from ${t1} and ${t2}", "days": "${n}", "list": ["${t2}", 3]}
    assert references(arguments) == {"t1", "t2", "n"}
    filled = fill_references(arguments, {"t1": "Paris", "t2": '{"x": 1}', "n": "3"})
    # A whole-value reference takes the result's JSON value; inside a string, its text.
    assert filled == {"city": "Paris", "note": 'from Paris and {"x": 1}', "days": 3, "list": [{"x": 1}, 3]}
    assert fill_references({"a": "${missing}"}, {}) == {"a": "${missing}"}
