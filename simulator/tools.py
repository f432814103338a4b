"""A simulated model that uses the tools it is offered: when a chat request offers function tools (and does
not answer a call already), the answer is one call to the tool `tool_choice` names, or the first, with
arguments that fit its parameter schema. Streamed, the arguments arrive in fragments, as OpenAI sends them.
A request answering a call (its last message from a tool) gets an ordinary reply.

With `rounds` above 1 (SimulationSettings.tool_rounds) the model works like a ReAct loop, one call per
answer: a request whose last message is a tool result gets another call until the turn (the messages
after the last user message) holds `rounds` tool results, and only then an ordinary reply. Each round's
arguments differ where the schema allows: round k (0-based) picks the k-th value of an enum (cycling), and
a free string gets " <k + 1>" appended from the second round on; round 0's arguments are the plain ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from simulator.schema import instance_of


def requested_call(body: Mapping[str, Any], rounds: int = 1) -> tuple[str, str] | None:
    """(tool name, JSON arguments) the simulated model calls, or None for an ordinary reply. `rounds`: tool
    results the turn must hold before the model answers instead of calling again."""
    tools = [t for t in body.get("tools") or () if isinstance(t, Mapping) and t.get("type") == "function"]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    messages = body.get("messages") or ()
    answered = tool_results_in_turn(messages)
    if messages and isinstance(messages[-1], Mapping) and messages[-1].get("role") == "tool" and answered >= rounds:
        return None
    functions = [f for t in tools if isinstance(f := t.get("function"), Mapping)]
    if not functions:
        return None
    chosen = choice.get("function") if isinstance(choice, Mapping) else None
    named = chosen.get("name") if isinstance(chosen, Mapping) else None
    function = next((f for f in functions if f.get("name") == named), functions[0])
    parameters = function.get("parameters")
    arguments = instance_of(parameters) or {}
    if answered and rounds > 1:
        arguments = _varied(arguments, parameters, answered)
    return str(function.get("name", "")), orjson.dumps(arguments).decode()


def tool_results_in_turn(messages: Any) -> int:
    """Tool results after the last user message (the current turn's round trips so far)."""
    count = 0
    for message in reversed(messages if isinstance(messages, list | tuple) else ()):
        role = message.get("role") if isinstance(message, Mapping) else None
        if role == "user":
            break
        count += role == "tool"
    return count


def _varied(value: Any, schema: Any, round_: int) -> Any:
    """`value` (an instance of `schema`) as round `round_` sends it: enums take their round_-th value,
    free strings get the round's number; the rest stays as it is."""
    if not isinstance(schema, Mapping):
        return value
    enum = schema.get("enum")
    if isinstance(enum, list) and enum and "const" not in schema:
        return enum[round_ % len(enum)]
    properties = schema.get("properties")
    if isinstance(value, dict) and isinstance(properties, Mapping):
        return {k: _varied(v, properties.get(k), round_) for k, v in value.items()}
    if isinstance(value, str) and schema.get("type") == "string" and "const" not in schema:
        return f"{value} {round_ + 1}"
    return value


def call_message(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]}


def call_deltas(call_id: str, name: str, arguments: str) -> list[bytes]:
    """The stream choices of one call: its id and name with empty arguments, then the arguments in three
    fragments (split anywhere, even inside a string)."""
    third = max(1, len(arguments) // 3)
    fragments = [arguments[:third], arguments[third: 2 * third], arguments[2 * third:]]
    opening = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    deltas = [opening] + [{"index": 0, "function": {"arguments": f}} for f in fragments if f]
    return [b'{"index":0,"delta":' + orjson.dumps({"tool_calls": [d]}) + b',"logprobs":null,"finish_reason":null}'
            for d in deltas]


def responses_call(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """`requested_call` for a Responses API request: its flat function tools, and its input items (a
    `function_call_output` last means the call was answered)."""
    tools = [{"type": "function", "function": t} for t in body.get("tools") or ()
             if isinstance(t, Mapping) and t.get("type") == "function"]
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        choice = {"type": "function", "function": {"name": choice.get("name")}}
    value = body.get("input")
    items: list[Any] = value if isinstance(value, list) else []
    answered = bool(items) and isinstance(items[-1], Mapping) and items[-1].get("type") == "function_call_output"
    return requested_call({"tools": tools, "tool_choice": choice, "messages": [{"role": "tool"}] if answered else []})
