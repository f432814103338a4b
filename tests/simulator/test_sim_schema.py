"""The simulator's structured answers: the smallest value that fits the schema asked for."""

from __future__ import annotations

import json

from simulator.schema import instance_of, structured_reply
from simulator.tools import requested_call


def test_the_smallest_fitting_value() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"}, "age": {"type": "integer", "minimum": 18}, "ok": {"type": "boolean"},
            "kind": {"enum": ["a", "b"]}, "fixed": {"const": 3}, "maybe": {"anyOf": [{"type": "number"},
                                                                                      {"type": "null"}]},
            "pair": {"type": "array", "items": {"$ref": "#/$defs/Point"}, "minItems": 2},
            "nullable": {"type": ["null", "string"]},
        },
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}}},
    }
    assert instance_of(schema) == {"name": "simulated", "age": 18, "ok": False, "kind": "a", "fixed": 3, "maybe": 0,
                                   "pair": [{"x": 0}, {"x": 0}], "nullable": "simulated"}


def test_a_self_referencing_schema_ends() -> None:
    schema = {"$ref": "#/$defs/Node", "$defs": {"Node": {"type": "object", "properties": {
        "child": {"$ref": "#/$defs/Node"}}}}}
    assert json.dumps(instance_of(schema))  # bounded depth, no recursion error


def test_which_requests_ask_for_structure() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    chat = {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    responses = {"text": {"format": {"type": "json_schema", "name": "x", "schema": schema}}}
    assert structured_reply(chat) == structured_reply(responses) == '{"a":"simulated"}'
    assert structured_reply({"response_format": {"type": "json_object"}}) == '{"simulated": true}'
    assert structured_reply({"response_format": {"type": "text"}}) is None
    assert structured_reply({}) is None


def test_a_branching_recursive_schema_stays_small() -> None:
    # Three self-references per level once took minutes (exponential within the depth bound).
    schema = {"type": "object", "properties": {"a": {"$ref": "#"}, "b": {"$ref": "#"}, "c": {"$ref": "#"}}}
    assert len(json.dumps(instance_of(schema))) < 200_000


def test_malformed_tools_get_an_ordinary_reply() -> None:
    assert requested_call({"tools": [{"type": "function", "function": "x"}]}) is None
    tools = [{"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}}]
    assert requested_call({"tools": tools, "tool_choice": {"type": "function", "function": "a"}}) == ("a", "{}")
