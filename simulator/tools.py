"""A simulated model that uses the tools it is offered: when a chat request offers function tools (and does
not answer a call already), the answer is one call to the tool `tool_choice` names, or the first, with
arguments that fit its parameter schema. Streamed, the arguments arrive in fragments, as OpenAI sends them.
A request answering a call (its last message from a tool) gets an ordinary reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from simulator.schema import instance_of


def requested_call(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(tool name, JSON arguments) the simulated model calls, or None for an ordinary reply."""
    tools = [t for t in body.get("tools") or () if isinstance(t, Mapping) and t.get("type") == "function"]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    messages = body.get("messages") or ()
    if messages and isinstance(messages[-1], Mapping) and messages[-1].get("role") == "tool":
        return None
    functions = [f for t in tools if isinstance(f := t.get("function"), Mapping)]
    if not functions:
        return None
    chosen = choice.get("function") if isinstance(choice, Mapping) else None
    named = chosen.get("name") if isinstance(chosen, Mapping) else None
    function = next((f for f in functions if f.get("name") == named), functions[0])
    return str(function.get("name", "")), orjson.dumps(instance_of(function.get("parameters")) or {}).decode()


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
